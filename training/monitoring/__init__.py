"""Watch the champion: drift and delayed-label performance windows, the retrain decision, its policy and deferral."""
