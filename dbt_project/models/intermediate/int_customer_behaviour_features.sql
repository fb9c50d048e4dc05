{#-
    Per-transaction customer behaviour, point-in-time correct: every window looks only backwards
    from the transaction's own event_ts (RANGE frames ending at CURRENT ROW), so adding later
    transactions never changes an earlier row.

    - tx_count_1h / tx_count_24h: the customer's transactions in [event_ts - 1h, event_ts] and
      [event_ts - 24h, event_ts], this one included; a transaction exactly 1h (24h) earlier counts.
    - amount_to_customer_avg: amount / the customer's average amount over [event_ts - 30d, event_ts]
      excluding this transaction; 1.0 when there is no such history.
    - is_new_country / is_new_device: 1 when no earlier transaction of the customer used this
      country / device.
    Transactions of one customer with the identical timestamp are peers of each other in a RANGE
    frame and see each other; with microsecond timestamps this is a negligible, documented edge.
-#}
with

transactions as (

    select
        transaction_id,
        customer_id,
        event_ts,
        amount,
        country,
        device_id

    from {{ ref('stg_raw__transactions') }}

),

windowed as (

    select
        transaction_id,
        event_ts,
        amount,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '1 hour' preceding and current row
        ) as tx_count_1h,

        count(*) over (
            partition by customer_id
            order by event_ts
            range between interval '24 hours' preceding and current row
        ) as tx_count_24h,

        avg(amount) over (
            partition by customer_id
            order by event_ts
            range between interval '30 days' preceding and current row
            exclude current row
        ) as prior_avg_amount_30d,

        min(event_ts) over (
            partition by customer_id, country
            order by event_ts
            range between unbounded preceding and current row
        ) as country_first_seen_ts,

        min(event_ts) over (
            partition by customer_id, device_id
            order by event_ts
            range between unbounded preceding and current row
        ) as device_first_seen_ts

    from transactions

),

final as (

    select
        transaction_id,
        tx_count_1h,
        tx_count_24h,
        case
            when prior_avg_amount_30d is null or prior_avg_amount_30d <= 0 then 1.0
            else amount / prior_avg_amount_30d
        end as amount_to_customer_avg,
        case when country_first_seen_ts = event_ts then 1 else 0 end as is_new_country,
        case when device_first_seen_ts = event_ts then 1 else 0 end as is_new_device

    from windowed

)

select * from final
