"""The simulated source system the loop ingests from (card transactions, delayed chargeback labels)."""
