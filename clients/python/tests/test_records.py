"""Unit tests of the record decoders.

Records encoded by the project's TypeScript encoder (codecs/flat-record.ts) are written by
test/clients/python.test.ts into the directory named by TICKSTREAM_FIXTURES, with what they
hold in expected.json; without that variable those cases are skipped. The other cases build
records with the flatbuffers runtime's Builder.

    PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests
"""

import json
import math
import os
import unittest

import flatbuffers

from tickstream import RecordError, decode_bar, decode_tick_record, decode_ticks
from tickstream.records import is_tick_record

FIXTURES = os.environ.get("TICKSTREAM_FIXTURES")


def _float(v):
    return float("nan") if v == "NaN" else v  # expected.json writes NaN as "NaN"


def _tick_record(schema_version=None, seqs=(), symbol="EURUSD", identifier=b"TSK1"):
    """A TickRecord with only the fields a case needs (the others left absent)."""
    b = flatbuffers.Builder(256)
    name = b.CreateString(symbol)
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(name)
    symbols = b.EndVector()
    b.StartVector(8, len(seqs), 8)
    for s in reversed(seqs):
        b.PrependUint64(s)
    seq = b.EndVector()
    source = b.CreateString("built")
    b.StartObject(15)
    if schema_version is not None:
        b.PrependUint16Slot(0, schema_version, 1)
    b.PrependUOffsetTRelativeSlot(1, source, 0)
    b.PrependUOffsetTRelativeSlot(4, symbols, 0)
    b.PrependUOffsetTRelativeSlot(5, seq, 0)
    b.Finish(b.EndObject(), file_identifier=identifier)
    return bytes(b.Output())


@unittest.skipUnless(FIXTURES, "TICKSTREAM_FIXTURES not set: run through test/clients/python.test.ts")
class TestRecordsFromTheTypeScriptEncoder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8") as f:
            cls.expected = json.load(f)

    def read(self, name):
        with open(os.path.join(FIXTURES, name), "rb") as f:
            return f.read()

    def test_tick_record_columns_and_rows(self):
        for case in self.expected["ticks"]:
            with self.subTest(file=case["file"]):
                value = self.read(case["file"])
                self.assertTrue(is_tick_record(value))
                cols = decode_tick_record(value)
                self.assertEqual(cols.source, case["source"])
                self.assertEqual(len(cols), len(case["rows"]))
                if case["rows"]:
                    self.assertEqual(cols.first_seq, case["rows"][0]["seq"])
                    self.assertEqual(cols.last_seq, case["rows"][-1]["seq"])
                got = [t.__dict__ for t in cols.ticks()]
                want = [{**row, "source": case["source"]} for row in case["rows"]]
                self.assertEqual(got, want)
                self.assertEqual(decode_ticks(value), cols.ticks())

    def test_bar_record(self):
        for case in self.expected["bars"]:
            with self.subTest(file=case["file"]):
                bar = decode_bar(self.read(case["file"])).__dict__
                for key, want in case["bar"].items():
                    want = _float(want)
                    if isinstance(want, float) and math.isnan(want):
                        self.assertTrue(math.isnan(bar[key]), key)
                    else:
                        self.assertEqual(bar[key], want, key)

    def test_a_bar_record_is_not_a_tick_record(self):
        value = self.read(self.expected["bars"][0]["file"])
        with self.assertRaisesRegex(RecordError, "TSK1 missing"):
            decode_tick_record(value)


class TestRecordErrors(unittest.TestCase):
    def test_absent_columns_read_as_defaults(self):
        cols = decode_tick_record(_tick_record(seqs=(7, 8)))
        self.assertEqual(cols.seq, [7, 8])
        self.assertEqual(cols.bid, [0, 0])
        self.assertEqual([t.symbol for t in cols.ticks()], ["EURUSD", "EURUSD"])

    def test_newer_schema_version_is_refused_with_what_to_do(self):
        with self.assertRaisesRegex(RecordError, "schema version 2 is newer.*update the tickstream package"):
            decode_tick_record(_tick_record(schema_version=2, seqs=(1,)))

    def test_wrong_identifier_is_refused(self):
        with self.assertRaisesRegex(RecordError, "TSK1 missing"):
            decode_tick_record(_tick_record(seqs=(1,), identifier=b"XXXX"))
        with self.assertRaisesRegex(RecordError, "TSK1 missing"):
            decode_tick_record(b"\x00\x01")

    def test_truncated_vector_is_refused(self):
        value = _tick_record(seqs=tuple(range(1, 65)))
        # Offsets in the first half point into the cut-off second half.
        with self.assertRaisesRegex(RecordError, "truncated or corrupt"):
            decode_tick_record(value[: len(value) // 2])


if __name__ == "__main__":
    unittest.main()
