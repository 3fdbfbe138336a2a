"""Screening of rating (MOS) observers: ITU-R BT.500's kurtosis-based rule, and a check
for ratings without any variance.

ITU-R BT.500-14 (2019), Annex 2 section 2.3.1 (screening for DSIS, DSCQS and ACR-type
tests). For every presentation (here: one image, rated on one criterion) with mean u, sample
standard deviation S and kurtosis beta2 = m4 / m2^2 of its ratings, a rating counts as
high (P_i) when it is at least u + c S and low (Q_i) when it is at most u - c S, with
c = 2 if 2 <= beta2 <= 4 (the ratings are taken as normal) and c = sqrt(20) otherwise.
Observer i is rejected when

    (P_i + Q_i) / N_i > 0.05   and   |P_i - Q_i| / (P_i + Q_i) < 0.3,

N_i her number of screened ratings: she deviates often, and in both directions (a rater
who is consistently strict or lenient deviates one way and is kept; the mixed model
absorbs her offset). Presentations with fewer than ``MIN_RATERS`` ratings, or with S = 0
(everybody agreed), cannot say whether anybody deviates and are not screened.

No variance: a participant who gives the same rating to every one of at least ``min_ratings``
images does not discriminate between them, whatever they showed ("straight-lining", which
crowdsourced rating protocols such as ITU-T P.808 screen against, beside gold and trapping
questions, which the study's attention trials are).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Fewest ratings of one presentation for its mean and spread to screen anybody.
MIN_RATERS = 4


def presentation_keys(ratings: pd.DataFrame) -> pd.Series:
    """One key per rated image and criterion (the image id, else prompt and variant)."""
    image = ratings["left_image"].astype("string")
    fallback = ratings["prompt_id"].astype(str) + "|" + ratings["left_variant"].astype(str)
    return ratings["criterion"].astype(str) + "|" + image.fillna(fallback).astype(str)


def bt500_screening(ratings: pd.DataFrame, *, min_ratings: int = 10) -> pd.DataFrame:
    """Per participant: screened ratings N, P, Q and BT.500's verdict (module docstring).

    ``bt500_verdict`` is "reject", "keep", or "not assessed" (fewer than ``min_ratings``
    screened ratings).
    """
    columns = ["participant", "bt500_ratings", "bt500_high", "bt500_low", "bt500_verdict"]
    if ratings.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {
            "participant": ratings["participant"].astype(str).to_numpy(),
            "key": presentation_keys(ratings).to_numpy(),
            "y": ratings["rating"].to_numpy(float),
        }
    )
    g = frame.groupby("key")["y"]
    n = g.transform("size").to_numpy(float)
    mean = g.transform("mean").to_numpy(float)
    centred = frame["y"].to_numpy(float) - mean
    frame["c2"], frame["c4"] = centred**2, centred**4
    m2 = frame.groupby("key")["c2"].transform("mean").to_numpy(float)
    m4 = frame.groupby("key")["c4"].transform("mean").to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(m2 * n / np.maximum(n - 1, 1))
        beta2 = m4 / m2**2
    factor = np.where((beta2 >= 2) & (beta2 <= 4), 2.0, np.sqrt(20.0))
    screened = (n >= MIN_RATERS) & (sd > 0)
    frame["screened"] = screened
    frame["high"] = screened & (centred >= factor * sd)
    frame["low"] = screened & (centred <= -factor * sd)
    table = frame.groupby("participant").agg(
        bt500_ratings=("screened", "sum"), bt500_high=("high", "sum"), bt500_low=("low", "sum")
    )
    total = table["bt500_ratings"].to_numpy(float)
    p, q = table["bt500_high"].to_numpy(float), table["bt500_low"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        reject = ((p + q) / total > 0.05) & (np.abs(p - q) / (p + q) < 0.3)
    table["bt500_verdict"] = np.where(
        total < min_ratings, "not assessed", np.where(reject, "reject", "keep")
    )
    return table.reset_index()[columns]


def uniform_ratings(ratings: pd.DataFrame, *, min_ratings: int = 10) -> pd.DataFrame:
    """Per participant: how many ratings, and whether every one was the same value."""
    if ratings.empty:
        return pd.DataFrame(columns=["participant", "ratings", "rating_sd", "uniform_ratings"])
    table = (
        ratings.assign(participant=ratings["participant"].astype(str))
        .groupby("participant")["rating"]
        .agg(ratings="size", rating_sd="std", distinct="nunique")
    )
    table["uniform_ratings"] = (table["ratings"] >= min_ratings) & (table["distinct"] == 1)
    return table.drop(columns="distinct").reset_index()
