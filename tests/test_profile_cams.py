from bench.profiling import load_profiles
from bench.registry import all_methods


def test_cam_profile_times_every_post_hoc_method():
    import torch

    from bench.method import PostHocCAM

    (table,) = load_profiles()["cams"](torch.device("cpu"), "small")
    expected = {n for n, c in all_methods().items() if issubclass(c, PostHocCAM)}
    assert {row["method"] for row in table.rows} == expected
    assert all(row["ms per image"] > 0 for row in table.rows)
    gflop = {row["method"]: row["GFLOP per image"] for row in table.rows}
    assert gflop["cam"] > 0 and gflop["gradcam"] >= gflop["cam"]
    # Smooth-GradCAM++ pays one forward of the trunk per noisy copy, plus the clean one
    passes = all_methods()["smoothgradcampp"].Config().n_samples + 1
    assert abs(gflop["smoothgradcampp"] / gflop["gradcampp"] - passes) < 0.05 * passes
