import json
import logging

from config import JsonLogFormatter


def record(**extra) -> logging.LogRecord:
    r = logging.LogRecord("aftersales", logging.INFO, __file__, 1, "refund %s sent", ("re_1",), None)
    r.__dict__.update(extra)
    return r


def test_json_logs_carry_the_case_id_from_the_temporal_context():
    line = json.loads(JsonLogFormatter().format(record(
        temporal_activity={"workflow_id": "case_ab12-refund-1", "activity_type": "refund_card"})))
    assert line["case_id"] == "case_ab12" and line["temporal"] == "refund_card"
    assert line["msg"] == "refund re_1 sent" and line["level"] == "INFO"
    assert json.loads(JsonLogFormatter().format(record(case_id="case_x")))["case_id"] == "case_x"
    assert "case_id" not in json.loads(JsonLogFormatter().format(record()))
