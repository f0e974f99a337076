"""Tests of stats/ (engineer S): every statistic against an oracle."""
