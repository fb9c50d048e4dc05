-- The smoothed category fraud rate is a probability strictly inside (0, 1] whenever the prior is
-- positive; 0, negative or > 1 means a broken numerator/denominator.
-- Reads the partitions this run rebuilt (all of them without rebuild_from): the others are unchanged.
{%- set since = rebuild_from() %}
select
    feature_date,
    merchant_category,
    category_fraud_rate

from {{ ref('int_category_fraud_rates_daily') }}
where (category_fraud_rate < 0 or category_fraud_rate > 1
    or global_fraud_rate < 0 or global_fraud_rate > 1
    or category_fraud_count > category_transaction_count
    or global_fraud_count > global_transaction_count)
{%- if since %}
    and feature_date >= {{ day_literal(since) }}
{%- endif %}
