{#-
    What the lender's own records said about the applicant when the application came in,
    point-in-time correct: only applications strictly before this one count, so loading later
    drops never changes an earlier row.

    - applicant_prior_applications_30d: the applicant's applications in
      [applied_at - prior_applications_window_days, applied_at), this one excluded (several
      applications in a short time is "loan stacking").
-#}
{%- set window_days = var('prior_applications_window_days') | int -%}
with

applications as (

    select
        application_id,
        applicant_id,
        applied_at

    from {{ ref('stg_raw__applications') }}

),

earlier as (

    select
        current_application.application_id,
        current_application.applied_at,
        earlier_application.applied_at as earlier_applied_at

    from applications as current_application
    inner join applications as earlier_application
        on earlier_application.applicant_id = current_application.applicant_id
        and earlier_application.applied_at < current_application.applied_at

),

history as (

    select
        application_id,
        sum(
            case
                when earlier_applied_at >= {{ dbt.dateadd('day', -window_days, 'applied_at') }} then 1
                else 0
            end
        ) as prior_applications_30d

    from earlier
    group by application_id

),

final as (

    select
        applications.application_id,
        coalesce(history.prior_applications_30d, 0) as applicant_prior_applications_30d

    from applications
    left join history
        on applications.application_id = history.application_id

)

select * from final
