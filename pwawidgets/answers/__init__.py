"""The expected values of the course's exercises, computed out of sight of the check cells.

A check cell calls a function here, so that the code a learner sees does not spell out the answer. One module per
part of the course: ``basics`` (notebooks 00–03), ``imagenet`` (04–08). Each function computes its expected value
from the notebook's own objects, by a route independent of the exercise's solution where one exists.
"""
