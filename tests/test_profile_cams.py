from bench.profiling import load_profiles
from bench.registry import all_methods


def test_cam_profile_times_every_post_hoc_method():
    import torch

    from bench.method import PostHocCAM

    (table,) = load_profiles()["cams"](torch.device("cpu"), "small")
    expected = {n for n, c in all_methods().items() if issubclass(c, PostHocCAM)}
    assert {row["method"] for row in table.rows} == expected
    assert all(row["ms per image"] > 0 for row in table.rows)
