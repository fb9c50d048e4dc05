"""Data in: land the source's batch, admit it, build the dbt models, gate them with Great Expectations, read training sets."""
