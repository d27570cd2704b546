"""Evaluation: judging generated images of the shapes world without reference to any model."""
