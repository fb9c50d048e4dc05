-- Every transaction counts itself, and the 1h window lies inside the 24h window:
-- 1 <= tx_count_1h <= tx_count_24h. A row here means a broken window frame.
-- Reads the partitions this run rebuilt (all of them without rebuild_from): the others are unchanged.
{%- set since = rebuild_from() %}
select
    transaction_id,
    tx_count_1h,
    tx_count_24h

from {{ ref('ml_transaction_features') }}
where (tx_count_1h < 1 or tx_count_1h > tx_count_24h)
{%- if since %}
    and batch_date >= {{ day_literal(since) }}
{%- endif %}
