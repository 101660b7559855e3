"""confusion() on scikit-learn's digits equals the seed analysis (numpy / scikit-learn) exactly."""
import json
import subprocess
import sys

from conftest import REPO


def test_confusion_on_digits_matches_seed_analysis(client, collection, tmp_path):
    out = tmp_path / "digits.json"
    subprocess.run([sys.executable, str(REPO / "tests" / "reference" / "seed_analysis.py"), "digits", str(out)], check=True)
    ref = json.loads(out.read_text())
    n = len(ref["labels"])
    client.create_version(collection, "digits", dim=ref["dim"])
    client.upsert(collection, "digits", list(range(n)), ref["vectors"], labels=ref["labels"])
    report = client.confusion(collection, "digits", mode="exact")
    assert report.errors == ref["errors"]
    assert abs(report.accuracy - ref["accuracy"]) < 1e-12
    got = {f"{p.true_label}->{p.predicted_label}": p.count for p in report.pairs}
    assert got == ref["pairs"]
    mat = report.matrix()
    assert int(mat.values.sum()) == n
    for key, count in ref["pairs"].items():
        t, p = key.split("->")
        assert mat.loc[t, p] == count
    margin = client.margin(collection, "digits", mode="exact")
    assert abs(margin.mean - ref["margin_mean"]) < 1e-9 * max(1.0, abs(ref["margin_mean"]))
