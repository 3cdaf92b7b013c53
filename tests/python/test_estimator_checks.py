"""scikit-learn's estimator checks (the list of skipped checks is in docs/PYTHON.md)."""
import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator, check_sample_weights_invariance

import flashkm


def test_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SkipTestWarning for the documented skip, pandas absent, ...
        check_estimator(flashkm.KMeans())


def test_xfail_checks_are_the_documented_ones():
    assert set(flashkm.KMeans()._get_tags()["_xfail_checks"]) == {"check_sample_weights_invariance"}


def test_unit_weights_are_the_same_as_no_weights():
    # the half of check_sample_weights_invariance that does hold
    check_sample_weights_invariance("KMeans", flashkm.KMeans(), kind="ones")


def test_get_set_params_and_clone():
    from sklearn.base import clone
    km = flashkm.KMeans(n_clusters=3, metric="cosine", n_threads=2)
    p = km.get_params()
    assert p["n_clusters"] == 3 and p["metric"] == "cosine" and p["init"] == "k-means++" and p["n_init"] == 1
    km2 = clone(km).set_params(n_clusters=5)
    assert km2.n_clusters == 5 and km.n_clusters == 3


def test_pipeline_and_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.random.default_rng(0).standard_normal((300, 4))
    gs = GridSearchCV(make_pipeline(StandardScaler(), flashkm.KMeans(random_state=0)),
                      {"kmeans__n_clusters": [2, 4]}, cv=3).fit(X)
    assert gs.best_params_["kmeans__n_clusters"] == 4  # higher score = lower inertia


def test_feature_names_out():
    km = flashkm.KMeans(3, random_state=0).fit(np.random.default_rng(0).standard_normal((30, 2)))
    assert list(km.get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]
