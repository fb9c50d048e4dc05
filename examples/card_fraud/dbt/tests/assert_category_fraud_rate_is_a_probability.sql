-- The smoothed category fraud rate is a probability strictly inside (0, 1] whenever the prior is
-- positive; 0, negative or > 1 means a broken numerator/denominator.
select
    feature_date,
    merchant_category,
    category_fraud_rate

from {{ ref('int_category_fraud_rates_daily') }}
where category_fraud_rate < 0 or category_fraud_rate > 1
    or global_fraud_rate < 0 or global_fraud_rate > 1
    or category_fraud_count > category_transaction_count
    or global_fraud_count > global_transaction_count
