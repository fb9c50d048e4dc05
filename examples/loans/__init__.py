"""The loans example: loan applications and their repaid/defaulted outcomes, delivered as daily file drops."""
