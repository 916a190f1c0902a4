"""Published numbers (leaderboard/reported.csv) beside the reproduced ones."""
import pytest

from bench.leaderboard import REPORTED_CSV, load_reported, render_markdown
from bench.registry import all_datasets
from tests.test_leaderboard import record


def test_reported_csv_holds_the_protocol_table():
    rows = load_reported(REPORTED_CSV)
    assert len(rows) == 31
    by_key = {(r.method, r.dataset, r.metric, r.backbone): r.value for r in rows}
    assert by_key[("cam", "cub", "MaxBoxAccV2", "vgg16")] == 63.7
    assert by_key[("fcam", "cub", "MaxBoxAcc", "resnet50")] == 90.3
    assert by_key[("negev", "camelyon16", "PxAP", "inceptionv3")] == 53.8
    assert by_key[("maxmin", "glas", "PxAP", "mean(vgg16,inceptionv3,resnet50)")] == 68.4
    assert by_key[("colocam", "ytov22", "CorLoc", "resnet50")] == 77.1
    assert all(r.paper for r in rows)
    image_datasets = {n for n, d in all_datasets().items() if d.task == "image"}
    assert {r.dataset for r in rows if r.metric != "CorLoc"} <= image_datasets


def test_reported_rows_sit_beside_the_reproduced_table_and_are_marked():
    reported = load_reported(REPORTED_CSV)
    records = [dict(record("cam", 0, 50.0, dataset="cub"), primary_metric="MaxBoxAccV2",
                    metrics={"MaxBoxAccV2": 50.0})]
    text = render_markdown(records, reported)
    cub = text[text.index("## cub"):]
    assert "Reported in papers for cub" in cub
    assert "| cam (reported)  | MaxBoxAccV2 | vgg16" in cub and "63.7" in cub
    assert "50.0 ± 0.0 (small-cnn)" in cub  # this leaderboard's number beside the paper's
    assert "Choe et al." in cub
    rest = text[text.index("## Reported in papers (datasets without results here)"):]
    assert "### glas" in rest and "### cub" not in rest


@pytest.mark.parametrize("body,message", [
    ("method,dataset,metric\n", "header must be"),
    ("method,dataset,metric,backbone,value,paper\ncam,cub,PxAP,vgg16,abc,P\n", "reported.csv:2: value 'abc'"),
    ("method,dataset,metric,backbone,value,paper\ncam,cub,PxAP,vgg16,63.7\n", "reported.csv:2: 5 fields"),
    ("method,dataset,metric,backbone,value,paper\ncam,cub,PxAP,,63.7,P\n", "reported.csv:2: empty backbone"),
    ("method,dataset,metric,backbone,value,paper\ncam,cub,PxAP,vgg16,163.7,P\n", "not a percentage"),
])
def test_malformed_reported_csv_names_file_and_line(tmp_path, body, message):
    path = tmp_path / "reported.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_reported(path)
