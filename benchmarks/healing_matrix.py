"""The healing matrix (issue 19): 12 worlds x seeds x {project policy, weekly retrain, no retrain, ceiling}.

Why: `healing_loop.py` closes the loop on the three worlds the policy was tuned on. A fraud team
meets more: holidays, a label feed that slows down, prices that drift for good, a fraud wave that
only moves the scores, a second shift after the first was healed. This drives the same loop
(`healing_loop.run_policy`: the project's `drift_job.measure_interval`, `retrain_trigger.decide`,
`drift_job.locate_onset`, the deferral and `gates.evaluate_gates`, day by day) over each world,
with labels *as they would be known on each day* (a fraud whose chargeback has not arrived reads
as a negative, also in the retrains' training data), and the latency gate timed best-of-5 in process CPU time.

Worlds (all with the simulator's own weekday rhythm; onset = day 42 unless said):

    stable            nothing changes
    seasonality       busy, pricier weekends (`weekly_seasonality`) from day 0
    holiday           seasonality + 3 days of triple volume, amounts x1.5 (`holiday`, days 42..44)
    label_delay       seasonality + chargebacks arrive twice as late (`label_delay_change`)
    benign_covariate  seasonality + amounts x1.3 for good (`amount_inflation`): the model is not hurt
    abrupt_concept    seasonality + `fraud_mechanism_shift` (the demo's: 90 % of fraud moves)
    subtle_concept    seasonality + the same shift at about a quarter of its strength (residual 0.775)
    gradual_concept   seasonality + the shift in steps: 20, 40, 60, 80, 90 % moved, 3 days each
    two_shifts        seasonality + the demo shift on day 42, a second one (electronics, 10 % of its
                      merchants, amounts x0.6) on day 63 - after the first shift's recovery champion
                      (serving from day 54-55) has served a week - run 9 weeks (days 28..90)
    persistent_drift  seasonality + amounts +3 %/day for good (`gradual_amount_drift`)
    blip              seasonality + one day of amounts x2 (day 42 only)
    prediction_only   seasonality + fraud 2.5x as frequent, same mechanisms (`fraud_rate_change`)

Policies: `project` (config/closedloop.yaml), `weekly` (a standard-window retrain every 7 days,
gated), `none` (the first champion throughout; its monitor's triggers are counted), `ceiling` (a
model fitted on true labels of up to 21 days of the final regime just before the scored week -
from the last onset on - an upper bound no policy can reach with delayed labels).

Columns, per world x policy (mean over seeds; per seed with --per-seed):
detect = days from the (first) onset to the first trigger (1 = onset day; `-` none); detect_last =
the same from the last onset (two_shifts' second shift); onset err =
named onset - true onset (days) of the first trigger after it, `cov` = share of those whose
change-point interval covers the truth; est = days from the onset to the first breach of the
early estimated-performance signal (CBPE-like; recorded, not acted on); false = triggers before
the first onset or in a benign world; retrains / promoted = attempted / promoted; PR-AUC last7 =
the serving scores over the last 7 days, with a 90 % stratified bootstrap interval.

    PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/healing_matrix.py --rows-per-day 1000 --weeks 6 \
        --seeds 0 1 2 --per-seed --csv rows.csv [--worlds ...] [--policies ...]

(PYTHONPATH=. from a git worktree: the venv's editable install otherwise imports the main checkout.)
Every world runs at least `AFTER_LAST_ONSET` (28) days past its last onset, so detection, the deferral
and a week of serving fit after every shift; at --weeks 6 that is the 6-week run for every world but
two_shifts, whose second shift (day 63) makes it 9 weeks (its weekly policy then retrains 8 times).

Measured whole on 2026-12-07 on commit 18144b0 (this benchmark as it is now: two_shifts' second shift
on day 63, past triggers carrying their signals), the command above, 1000 weekday rows/day, seeds 0 1 2,
the 2-core dev machine at load 2-3 (the lead's jobs; this benchmark at nice 19), 1276 s. The other 11
worlds under `project` and `none` were re-run with main's benchmark (831f115, shared budgets): the same
retrains and promotions per seed except subtle_concept seed 2, and PR-AUC within 0.01 - the benchmark
is not bit-reproducible: a seed's first champion comes out as one of two fits from run to run (seed 0:
holdout PR-AUC 0.643 or 0.665, twice with the same PYTHONHASHSEED=1; cause not found), which moves the
benign rows by up to 0.01 and subtle seed 2's first trigger. gradual_concept (0.289, was 0.317: seed 2
0.213, the same on main 5e0425f) changed with code landed since the previous table (cf696ed).

Re-measured on 2026-12-07 on commit 1b84fb8 (the benchmark passes the recovery baseline to the gates,
below): gradual_concept, abrupt_concept, two_shifts, subtle_concept and seasonality, all four policies,
with `--worlds gradual_concept abrupt_concept two_shifts subtle_concept seasonality` added to the command
above (the same machine, load ~3.5, 1142 s); their rows below are from that run, the other 7 worlds'
from 18144b0. Until 1b84fb8 the benchmark never gave `gates.evaluate_gates` the baseline scores, so every
recovery retrain faced the fallback floors (PR-AUC 0.15), not `gates.recovery.relative_to: baseline` as
configured and as the DAG judges it (`train._train_in_run` fits `train.baseline_holdout_scores`,
`evaluate` passes them); now `healing_loop.recovery_baseline` computes them with the same function on
the retrain's own split. What that changed: only weekly. Its recovery retrains on mixed windows (holdout
PR-AUC 0.13-0.26) beat the collapsed champion and the logistic baseline on
the same days and are promoted now: promoted per run abrupt 2.33 -> 3.0, gradual 2.67 -> 3.0,
two_shifts 3.67 -> 5.0; serving abrupt 0.322 -> 0.349, gradual 0.255 -> 0.255, two_shifts 0.025 ->
0.026. The project policy's retrains, triggers and PR-AUC are the same as before in all five worlds
(its promoted recovery retrains cleared 0.15 anyway; its rejected ones fail non_regression, which the
baseline does not waive) except subtle_concept, which moved by the benchmark's known run-to-run
variance (seed 2's trigger: detect 22 vs 27.5 days, retrains 1.0 vs 0.33, PR-AUC 0.519 either way).
`seeds` = seeds averaged:

                              seeds  detect  detect_last  onset_err    cov   est  false  retrains  promoted  pr_auc_last7  ci_low  ci_high
    world            policy
    stable           project      3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.674   0.605    0.757
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     0.333         0.679   0.606    0.760
                     none         3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.674   0.605    0.757
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.644   0.561    0.728
    seasonality      project      3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.754   0.690    0.818
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     0.667         0.757   0.698    0.821
                     none         3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.754   0.690    0.818
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.718   0.650    0.788
    holiday          project      3     NaN          NaN        NaN    NaN   3.0    3.0     1.000     0.000         0.739   0.672    0.802
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     1.000         0.758   0.698    0.820
                     none         3     NaN          NaN        NaN    NaN   3.0    3.0     0.000     0.000         0.739   0.672    0.802
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.757   0.691    0.820
    label_delay      project      3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.753   0.688    0.816
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     1.000         0.758   0.699    0.821
                     none         3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.753   0.688    0.816
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.718   0.650    0.788
    benign_covariate project      3     4.0          NaN     -0.333  0.667   NaN    0.0     2.000     0.000         0.736   0.670    0.801
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     1.333         0.745   0.682    0.812
                     none         3     4.0          NaN     -0.333  0.667   NaN    0.0     0.000     0.000         0.736   0.670    0.801
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.719   0.648    0.789
    abrupt_concept   project      3    10.0          NaN     -2.667  1.000  17.0    0.0     1.333     1.000         0.309   0.243    0.402
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     3.000         0.349   0.279    0.437
                     none         3    10.0          NaN     -2.667  1.000   4.0    0.0     0.000     0.000         0.055   0.028    0.092
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.360   0.290    0.454
    subtle_concept   project      3    22.0          NaN      6.500  1.000   NaN    0.0     1.000     0.333         0.519   0.435    0.607
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     1.000         0.516   0.434    0.602
                     none         3    22.0          NaN      6.500  1.000   NaN    0.0     0.000     0.000         0.519   0.435    0.607
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.535   0.459    0.623
    gradual_concept  project      3    12.0          NaN     -1.000  0.333  24.0    0.0     1.667     1.000         0.289   0.223    0.372
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     3.000         0.255   0.203    0.333
                     none         3    12.0          NaN     -1.000  0.333  17.0    0.0     0.000     0.000         0.057   0.028    0.093
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.366   0.297    0.467
    two_shifts       project      3    10.0          8.0     -2.667  1.000  17.0    0.0     2.667     2.000         0.351   0.289    0.428
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     8.000     5.000         0.026   0.025    0.029
                     none         3    10.0         17.0     -2.667  1.000  24.5    0.0     0.000     0.000         0.053   0.032    0.085
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.388   0.323    0.465
    persistent_drift project      3    11.0          NaN      2.333  0.333   NaN    0.0     2.000     0.000         0.701   0.631    0.776
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     0.667         0.725   0.657    0.796
                     none         3    11.0          NaN      2.333  0.333   NaN    0.0     0.000     0.000         0.701   0.631    0.776
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.706   0.635    0.776
    blip             project      3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.754   0.689    0.817
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     0.667         0.756   0.696    0.819
                     none         3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.754   0.689    0.817
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.726   0.658    0.797
    prediction_only  project      3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.851   0.818    0.881
                     weekly       3     NaN          NaN        NaN    NaN   NaN    NaN     5.000     1.000         0.858   0.830    0.887
                     none         3     NaN          NaN        NaN    NaN   NaN    0.0     0.000     0.000         0.851   0.818    0.881
                     ceiling      3     NaN          NaN        NaN    NaN   NaN    NaN     0.000     0.000         0.860   0.832    0.889

two_shifts per seed (18144b0; on 1b84fb8 the same but weekly seed 1 0.036; PR-AUC last7 [90 % interval], the second shift's trigger and retrain):

    seed  project               weekly  none   ceiling  project/ceiling  2nd trigger (signal, onset named)        2nd retrain (fitted on)
    0     0.325 [0.268, 0.401]  0.022   0.078  0.359    90.5 %           03-08 day 4 (prediction_drift, 03-07)    03-18 (03-07..03-13) promoted
    1     0.353 [0.298, 0.433]  0.036   0.048  0.392    89.9 %           03-15 day 11 (prediction_drift, 03-05)   03-16 (03-05..03-11) promoted
    2     0.374 [0.301, 0.452]  0.021   0.031  0.411    90.9 %           03-12 day 8 (performance, 03-05)         03-16 (03-05..03-11) promoted

Goals (issue 19) on this table:
* serving PR-AUC >= the weekly retrain's within its interval: met in all 12 worlds (project mean >=
  weekly's ci_low everywhere). Closest now abrupt_concept (1b84fb8): 0.309 vs weekly 0.349 [0.279,
  0.437], since weekly's recovery retrains face the baseline instead of the 0.15 floor; per seed 0.305
  vs 0.309, 0.329 vs 0.346, 0.293 vs 0.391 [0.323, 0.476] (seed 2 below weekly's interval); then
  persistent_drift 0.701 vs 0.725 [0.657, 0.796] (18144b0).
* >= 90 % of the ceiling after every shift: subtle 97 %, two_shifts 90.5 % (per seed 90.5, 89.9,
  90.9 %); abrupt 86 %, gradual 79 % missed. Abrupt: detected on day 6-10 (labels mature 5 days, then
  2 breaching 3-day windows), the retrain waits for 7 matured post-onset days and trains on those 7
  days (~70 frauds at this size); the ceiling fits 21 days of true labels - at 1000 rows/day the gap is
  the data, not the timing.
* at most half the weekly retrains: met (at most 2 attempted per 6-week run vs 5; two_shifts at most
  3 in 9 weeks vs 8).
* 0 false triggers in the benign worlds: stable, seasonality, label_delay (the monitor learns the
  label feed's delays), blip 0; holiday 3 (one per seed: data drift on the holiday's 2nd day, 02-13)
  with no calendar declared, 0 with the holiday declared in `drift.calendar` (`--calendar --worlds
  holiday --policies project`, seeds 0-2, an earlier commit: no trigger, no retrain, PR-AUC last7 0.739).
* abrupt shift detected within 2 windows: 2 breaching matured windows after the 5-day maturity (days
  6-10). Subtle within 10 days: missed (days 27-28 in 2 seeds, never in 1): it costs 3 % of PR-AUC
  (none 0.519 vs ceiling 0.535), far below the 15 % tolerance of a 3-day window of ~30 frauds.

two_shifts now tests what issue 19 describes: the first shift is healed (recovery champions promoted
on 02-23/02-24, serving from day 54-55, as in abrupt_concept) and the second, on day 63 (03-05), hits a
champion that has served 8-9 days. It collapses it (none and weekly: 0.02-0.08 over the last week) and
is healed in every seed: detected 4-11 days after it (prediction drift in seeds 0 and 1, matured
performance in seed 2), retrained once 7 matured post-onset days exist (03-16 to 03-18), promoted under
the recovery policy (holdout PR-AUC 0.23-0.44 vs the collapsed champion's 0.01-0.02), serving all of
the last 7 days. Until this commit two_shifts put the
second shift on day 52, two days before the first shift's recovery champion served, in a 6-week run
that left no room for detection, deferral and a week of serving after it (project 0.066 vs ceiling
0.385 in the previous table). What is left of the gap (90.5 % of the ceiling on average, seed 1 at
89.9 %) is the amount of post-onset data: the retrain fits the 7 days after the onset it names (holdout
3, validation 3, train 1, plus pre-onset days at `pre_onset_weight`), the ceiling 21 days of true
labels. Fitted with true labels on the first k days after the second onset and scored on the same last
week, the ceiling's model reaches (seeds 0/1/2) 0.402/0.344/0.354 at k=7, 0.347/0.347/0.367 at k=8,
0.359/0.392/0.411 at k=21: the project's 0.325/0.353/0.374 is what 7-8 post-onset days allow. The
guards cost nothing here: seed 1's storm cap on performance (its triggers 02-17, rejected, and 02-24,
promoted: 2 in 28 days) held the performance breach on 03-13/03-14, and prediction drift fired on its
own budget on 03-15; the deferral would have waited for 7 matured days after 03-05, until 03-16, anyway.
Before this commit the benchmark's past triggers did not say which signal fired them, so all signals
shared one budget (the DAG's `drift_job.past_triggers` records the signals); with them seed 1 triggered
on 03-15 instead of 03-17 (0.353 vs 0.345). Seed 0 named the second onset 2 days late (03-07: the first breaching prediction-drift window,
no significant change point in the 13 days of scores it served), so its retrain waited to 03-18 and fitted 03-07..
03-13. Seed 2's recovery champion raised a prediction-drift trigger on 03-22 (a weekend against a
7-day post-onset reference holding one weekend), retrained on 04-01 and rejected (non_regression): a
wasted retrain, no cost to serving.

Hardest world now: gradual_concept (79 % of the ceiling), then abrupt_concept (86 %, the data as above).
The estimated-performance signal (est) first breached 17-24 days after the concept shifts under `project`
but 4 days under `none` in some seeds (abrupt, two_shifts), though both serve the same champion until
day 12 - not explained here; it is recorded, never acted on.

gradual_concept per seed (1b84fb8, the run above; the staircase moves 20/40/60/80/90 % of fraud on
02-12/15/18/21/24, days 42-54):

    seed  project               weekly  none   ceiling  project/ceiling  triggers (onset named)            retrains (fitted on) -> gate
    0     0.293 [0.231, 0.373]  0.248   0.062  0.363    81 %             02-23 (02-14), 03-02 (02-18)      02-25 (02-14..02-20) rejected, 03-02 (02-18..02-25) promoted
    1     0.362 [0.282, 0.437]  0.232   0.040  0.384    94 %             02-22 (02-04), 03-01 (02-19)      02-22 (02-04..02-17) rejected, 03-02 (02-19..02-25) promoted
    2     0.213 [0.157, 0.307]  0.285   0.070  0.350    61 %             02-23 (02-15)                     02-26 (02-15..02-21) promoted

Why seed 2 is at 61 % (traced day by day with the monitor's windows): the performance signal fires on
02-23 (2 of 3 matured 3-day windows below 0.85 x the champion's holdout PR-AUC); the change point of the
daily matured PR-AUC names 02-15 (the 40 % step; its 90 % interval 02-15..02-15 is too narrow for a
ramp: a one-step model fitted to a staircase), so the deferral waits for the 7 matured days 02-15..02-21
and trains on 02-26: train 02-15, validation 02-16..02-18 (the final fit sees 02-15..02-18, 40-60 %
moved), holdout 02-19..02-21. It beats the collapsed champion (0.354 vs 0.142, baseline 0.198) and is
promoted - a model of the middle of the staircase, serving the 90 % regime from 02-27. No later trigger
was blocked (no cooldown, backoff or storm-cap decision after the promotion): its own matured windows
exist only from 03-06 (labels 5 days, a 3-day window), read 0.17, 0.21, 0.41, 0.36, 0.38, 0.17 against
its floor 0.30 (0.85 x 0.354), and k-of-n counts the first two, which overlap, once - 2 non-overlapping
breaches of 3 never occur before the run ends on 03-11. Seeds 0 and 1 score higher because their first
retrain was *rejected* (seed 0: non_regression, 0.191 vs 0.185; seed 1: the change point named 02-04, a
pre-onset one-off dip the k-of-n had dismissed, 8 days before the shift, so it trained mostly on the old
regime - a rule against change points before the episode would also discard subtle_concept seed 2's
correct 02-12, 3 days before its first breaching window, so none was added), the 7-day backoff passed, and the second trigger's change point, searched again on the longer
series, named a later step (02-18, 02-19): the promoted retrain learned the last steps. So the cause is
not a guard blocking a trigger nor the onset rule alone: a recovery retrain fitted on the first 7
matured post-onset days is promoted while a gradual shift is still moving, and nothing revisits it
unless its decay breaches the 15 % tolerance in 2 of 3 non-overlapping windows - at ~30 frauds a window
a 20-40 % drop is not reliably seen within the 2 weeks left. The training code was left unchanged: this is
a design choice of the deferral (train once, at `min_post_onset_days`), not a defect a rule fixes; making
the named onset later or the wait longer would be constants fitted to this staircase.

What a consolidating retrain would give (a what-if, not the project's policy): `--follow-up-days 14`
retrains once more at a promoted onset-anchored champion's onset when 14 matured days follow it (gated
as usual). Measured on bada8e7, `--worlds gradual_concept abrupt_concept --policies project
--follow-up-days 14` (seeds 0-2, 172 s) and `--worlds two_shifts ...` (211 s): gradual 0.289 -> 0.321
(seed 2 0.213 -> 0.309: its follow-up on 03-05, fitted 02-15..02-25, holdout 02-26..02-28, promoted
0.217 vs 0.102; seeds 0 and 1 unchanged, their follow-ups rejected by non_regression), abrupt 0.309 ->
0.324 (seeds 0 and 2 promoted), two_shifts 0.351 -> 0.351; at a cost of one more retrain each (project
retrains per run: gradual 1.67 -> 2.67, abrupt 1.33 -> 2.33, two_shifts 2.67 -> 4.33; weekly 5 and 8).
A production version would record the follow-up as a deferral (`retrain_deferral`) that does not hold
the monitor as a retrain in flight; left for a decision.

Also noticed, not explained: under weekly, two_shifts seed 2's last retrain (03-26, fitted 02-23..03-18,
holdout 03-19..03-21 PR-AUC 0.378, promoted) serves 6 of the last 7 days, which read PR-AUC 0.021
[0.020, 0.023] - weekly's 0.02-0.04 in two_shifts is not a gate effect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks import healing_loop as hl
from examples.card_fraud import replay as mr
from examples.card_fraud import simulator
from training.config import Config, load_config, with_overrides
from training.data import datasets
from training.model.metrics import average_precision, compute_metrics

DAY = dt.timedelta(days=1)
ONSET = hl.ONSET  # day 42
#: the second shift of `two_shifts`: after the first shift's recovery champion has served about a week
#: (abrupt_concept under `project`, seeds 0-2: promoted on days 53-54, serving from days 54-55)
SECOND_ONSET = 63
#: days every run covers after a world's last onset: detection (labels mature 5 days, then 2 breaching
#: 3-day windows: ~10 days), the deferral (7 matured post-onset days: a retrain from day 12 on), a week
#: of serving scored, and a week of slack for one rejected retrain. 42 + 28 = 70 = the 6-week run, so
#: only two_shifts (63 + 28 = 91 days, 9 weeks) runs longer than `--weeks 6`.
AFTER_LAST_ONSET = 28
SEASONAL = {"kind": "weekly_seasonality", "from_day": 0}
SHIFT = {"kind": "fraud_mechanism_shift", "from_day": ONSET}


def _staircase() -> list[dict[str, Any]]:
    steps = [(0.8, 0), (0.6, 3), (0.4, 6), (0.2, 9), (0.1, 12)]
    out = []
    for i, (residual, start) in enumerate(steps):
        until = ONSET + steps[i + 1][1] if i + 1 < len(steps) else None
        out.append({"kind": "fraud_mechanism_shift", "from_day": ONSET + start, "until_day": until,
                    "params": {"residual": residual}})
    return out


#: world -> (scenarios, onset days, benign: every trigger is false)
WORLDS: dict[str, tuple[list[dict[str, Any]], list[int], bool]] = {
    "stable": ([], [], True),
    "seasonality": ([SEASONAL], [], True),
    "holiday": ([SEASONAL, {"kind": "holiday", "from_day": ONSET, "until_day": ONSET + 3}], [ONSET], True),
    "label_delay": ([SEASONAL, {"kind": "label_delay_change", "from_day": ONSET}], [ONSET], True),
    "benign_covariate": ([SEASONAL, {"kind": "amount_inflation", "from_day": ONSET, "params": {"factor": 1.3}}],
                         [ONSET], False),
    "abrupt_concept": ([SEASONAL, SHIFT], [ONSET], False),
    "subtle_concept": ([SEASONAL, {**SHIFT, "params": {"residual": 0.775}}], [ONSET], False),
    "gradual_concept": ([SEASONAL, *_staircase()], [ONSET], False),
    "two_shifts": ([SEASONAL, {**SHIFT, "until_day": SECOND_ONSET},
                    {"kind": "fraud_mechanism_shift", "from_day": SECOND_ONSET,
                     "params": {"categories": ["electronics"], "merchant_share": 0.1, "amount_factor": 0.6}}],
                   [ONSET, SECOND_ONSET], False),
    "persistent_drift": ([SEASONAL, {"kind": "gradual_amount_drift", "from_day": ONSET}], [ONSET], False),
    "blip": ([SEASONAL, {"kind": "amount_inflation", "from_day": ONSET, "until_day": ONSET + 1,
                         "params": {"factor": 2.0}}], [ONSET], True),
    "prediction_only": ([SEASONAL, {"kind": "fraud_rate_change", "from_day": ONSET}], [ONSET], False),
}
POLICIES = ("project", "weekly", "none", "ceiling")
LAST_DAYS = 7


#: world -> the known events a team would declare in `drift.calendar` (with --calendar)
CALENDAR: dict[str, list[tuple[str, int, int, str]]] = {
    "holiday": [("holiday", ONSET, ONSET + 2, "three days of triple volume and larger baskets")],
}


def run_days(name: str, weeks: int) -> int:
    """Days simulated for world `name`: the first champion's days + `weeks`, at least `AFTER_LAST_ONSET` after its last onset."""
    _, onsets, _ = WORLDS[name]
    return max(hl.TRAIN_DAYS + 7 * weeks, max(onsets, default=0) + AFTER_LAST_ONSET)


def world_config(name: str, rows_per_day: int, seed: int, calendar: bool = False) -> Config:
    scenarios, _, _ = WORLDS[name]
    start = load_config().simulator.start_date
    events = [{"name": n, "start": (start + a * DAY).isoformat(), "end": (start + b * DAY).isoformat(), "reason": r}
              for n, a, b, r in CALENDAR.get(name, [])] if calendar else []
    return with_overrides(
        load_config(),
        simulator={
            "seed": seed,
            "transactions_per_day": rows_per_day,
            "n_customers": max(500, rows_per_day * 3 // 4),
            "n_merchants": 150,
            "scenarios": scenarios,
        },
        training={"seed": seed},
        drift={"performance_bootstrap": 100, "calendar": events},
    )


def label_arrival(cfg: Config, feats: pd.DataFrame) -> pd.Series:
    """The day each row's label is known (positives: batch date + the simulator's delay; negatives never)."""
    id_col = cfg.model.id_column
    days = sorted(set(feats["batch_date"]))
    truth = pd.concat([simulator.ground_truth(cfg.simulator, d)[[id_col, "label_delay_days"]] for d in days])
    delay = feats[[id_col]].merge(truth, on=id_col, how="left")["label_delay_days"].to_numpy()
    arrival = [
        b + dt.timedelta(days=int(d)) if pd.notna(d) else dt.date.max
        for b, d in zip(feats["batch_date"], delay, strict=True)
    ]
    return pd.Series(arrival, index=feats.index)


def pr_auc_ci(y: np.ndarray, s: np.ndarray, seed: int, n: int = 200) -> tuple[float, float, float]:
    """PR-AUC and a 90 % class-stratified bootstrap interval."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boots = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        boots.append(average_precision(y[idx], s[idx]))
    lo, hi = np.quantile(boots, [0.05, 0.95])
    return float(average_precision(y, s)), float(lo), float(hi)


def run_world(name: str, rows_per_day: int, weeks: int, seed: int, policies: list[str],
              calendar: bool = False, follow_up_days: int | None = None) -> list[dict[str, Any]]:
    cfg = world_config(name, rows_per_day, seed, calendar)
    _, onset_days, benign = WORLDS[name]
    target = cfg.model.target
    total = run_days(name, weeks)
    day = {i: cfg.simulator.start_date + i * DAY for i in range(total)}
    t0 = time.perf_counter()
    feats = hl.with_slices(
        mr.simulated_features(cfg.simulator, total, label_maturity_days=cfg.windows.label_maturity_days)
    )
    arrival = label_arrival(cfg, feats)
    base = feats[feats.batch_date < day[hl.TRAIN_DAYS]].reset_index(drop=True)
    splits = datasets.split_windows(base, cfg.windows)
    score = hl.fit_model(cfg, *hl.fit_frame(splits), seed)
    ref = base[base.batch_date >= day[hl.TRAIN_DAYS - cfg.drift.reference_days]]
    first = hl.Champion(1, score, ref.assign(score=score(ref), model_version="1"),
                        compute_metrics(splits.holdout[target], score(splits.holdout), cfg.model))
    print(f"  {name} seed {seed}: {len(feats)} rows + first champion in {time.perf_counter() - t0:.0f} s "
          f"(holdout PR-AUC {first.metrics['pr_auc']:.3f})", file=sys.stderr)
    days = [day[i] for i in range(hl.TRAIN_DAYS, total)]
    last = feats.batch_date >= day[total - LAST_DAYS]
    onsets = [day[i] for i in onset_days]
    rows = []
    for policy in policies:
        t1 = time.perf_counter()
        out = hl.Outcome()
        if policy == "ceiling":
            fit_from = max([day[total - LAST_DAYS - 21], *onsets])
            fit_rows = feats[(feats.batch_date >= fit_from) & ~last]
            scores = pd.Series(hl.fit_model(cfg, fit_rows, None, seed)(feats), index=feats.index)
        else:
            out, scores = hl.run_policy(policy, cfg, feats, first, days, label_known_on=arrival,
                                        follow_up_days=follow_up_days)
        y = feats.loc[last, target].astype(int).to_numpy()
        value, lo, hi = pr_auc_ci(y, scores.loc[last].to_numpy(), seed)
        monitored = policy in ("project", "none")
        false = [d for d in out.triggers if benign or not onsets or d < onsets[0]]
        after = [d for d in out.triggers if onsets and not benign and d >= onsets[0]]
        after_last = [d for d in after if d >= onsets[-1]]
        first_after = next((o for o in out.onsets if onsets and o["day"] >= onsets[0]), None)
        err = cov = None
        if first_after and first_after["onset"] and not benign:
            truth = max((o for o in onsets if o <= first_after["day"]), default=onsets[0])
            named = dt.date.fromisoformat(first_after["onset"])
            err = (named - truth).days
            iv = first_after["interval"]
            cov = None if iv is None else float(iv[0] <= truth.isoformat() <= iv[1])
        est = [d for d in out.estimated_breaches if onsets and d >= onsets[0]]
        rows.append({
            "world": name, "policy": policy, "seed": seed,
            "detect": (after[0] - onsets[0]).days + 1 if after else None,
            "detect_last": (after_last[0] - onsets[-1]).days + 1 if after_last and len(onsets) > 1 else None,
            "onset_err": err, "cov": cov,
            "est": (est[0] - onsets[0]).days + 1 if est and monitored else None,
            "false": len(false) if monitored else None,
            "retrains": len(out.retrains), "promoted": len(out.promoted_serving_from),
            "pr_auc_last7": value, "ci_low": lo, "ci_high": hi,
            "s": round(time.perf_counter() - t1),
        })
        print(f"  {name}/{policy}/seed {seed}: PR-AUC last7 {value:.3f} [{lo:.3f}, {hi:.3f}]; triggers "
              f"{[str(d) for d in out.triggers]}; blocked {[(str(d), r) for d, r in out.blocked]}; onsets {out.onsets}; retrains "
              f"{[(str(d), w, p) for d, w, p, _ in out.retrains]} ({time.perf_counter() - t1:.0f} s)",
              file=sys.stderr, flush=True)
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per world x policy (detection: median; false triggers: total)."""
    g = rows.groupby(["world", "policy"], sort=False)
    out = pd.DataFrame({
        "seeds": g.size(),
        "detect": g["detect"].median(),
        "detect_last": g["detect_last"].median(),
        "onset_err": g["onset_err"].mean(),
        "cov": g["cov"].mean(),
        "est": g["est"].median(),
        "false": g["false"].sum(min_count=1),
        "retrains": g["retrains"].mean(),
        "promoted": g["promoted"].mean(),
        "pr_auc_last7": g["pr_auc_last7"].mean(),
        "ci_low": g["ci_low"].mean(),
        "ci_high": g["ci_high"].mean(),
    })
    return out.round(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=3000, help="weekday rows (weekends more)")
    parser.add_argument("--weeks", type=int, default=6,
                        help=f"weeks replayed after the first champion; a world's run is extended to "
                             f"{AFTER_LAST_ONSET} days after its last onset (two_shifts: day {SECOND_ONSET})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worlds", nargs="+", choices=sorted(WORLDS), default=list(WORLDS))
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--per-seed", action="store_true", help="print every seed's row too")
    parser.add_argument("--csv", help="also write the per-seed rows here")
    parser.add_argument("--calendar", action="store_true",
                        help="declare the worlds' known events (the holiday) in drift.calendar, as a team would")
    parser.add_argument("--follow-up-days", type=int, default=None,
                        help="what-if, not the project's policy: after a promoted onset-anchored retrain, retrain "
                             "once more at its onset when this many matured days follow it")
    args = parser.parse_args(argv)
    if args.weeks < 1:
        parser.error("--weeks must be >= 1")
    print(f"size: {args.rows_per_day} weekday rows/day, {args.weeks} weeks replayed (days {hl.TRAIN_DAYS}.."
          f"{hl.TRAIN_DAYS + 7 * args.weeks - 1}; up to {AFTER_LAST_ONSET} days after a world's last onset), "
          f"seeds {args.seeds}; onset day {ONSET} (two_shifts' second: {SECOND_ONSET})", flush=True)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    # one OpenMP/BLAS thread: on a shared 2-core box xgboost's threads spin against other jobs (a fit
    # measured 12.6 s with 2 threads vs 1.0 s with one), which also made the latency gate fail
    with threadpool_limits(1):
        for name in args.worlds:
            for seed in args.seeds:
                rows.extend(run_world(name, args.rows_per_day, args.weeks, seed, args.policies, args.calendar,
                                      args.follow_up_days))
                if args.csv:
                    pd.DataFrame(rows).to_csv(args.csv, index=False)
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.max_rows", 500):
        if args.per_seed:
            print(frame.set_index(["world", "policy", "seed"]).round(3).to_string())
        print(summarize(frame).to_string())
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
