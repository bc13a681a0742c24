"""Buckets: parsing with helpful errors, clip assignment, resize/crop plans and the batch planner."""

from __future__ import annotations

import math

import pytest
from conftest import assert_user_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ltx_lora.bucket_spec import (
    Bucket,
    batch_size_for,
    is_valid_frame_count,
    largest_frame_count,
    latent_tokens,
    nearest_valid,
    parse_buckets,
)
from ltx_lora.data.buckets import (
    ClipShape,
    Placement,
    Skipped,
    assign_bucket,
    available_frames,
    plan_batches,
    resize_plan,
    source_frame_indices,
)
from ltx_lora.errors import UserError

# --- parsing ------------------------------------------------------------------------------------------------------


def test_parse_valid():
    assert parse_buckets("960x544x49") == [Bucket(960, 544, 49)]
    assert parse_buckets(" 960x544x49 ; 512 x 512 x 1;960×544×49; ") == [Bucket(960, 544, 49), Bucket(512, 512, 1)]
    assert str(Bucket(960, 544, 49)) == "960x544x49"


def test_tokens_match_the_official_formula():
    # The official docs' example: 768x448x89 -> 24 * 14 * 12 = 4,032.
    assert latent_tokens(768, 448, 89) == Bucket(768, 448, 89).tokens == 4032
    assert Bucket(960, 544, 1).tokens == 30 * 17


@pytest.mark.parametrize("spec,needles", [
    ("950x544x49", ["width 950", "multiple of 32", "960 or 928"]),
    ("960x545x49", ["height 545", "544 or 576"]),
    ("960x544x48", ["48 frames is not 8k+1", "49 or 41"]),
    ("960x544x50", ["49 or 57"]),
    ("950x544x48", ["960 or 928", "49 or 41"]),
    ("16x544x0", ["width 16", "nearest valid: 32)", "0 frames", "nearest valid: 1)"]),
    ("960x544", ["not WIDTHxHEIGHTxFRAMES"]),
    ("960x544x49,512x512x1", ['separate buckets with ";"']),
    ("wide", ["not WIDTHxHEIGHTxFRAMES"]),
    (" ; ", ["No resolution buckets"]),
])
def test_parse_errors_are_one_sentence_with_nearest_values(spec, needles):
    with pytest.raises(UserError) as e:
        parse_buckets(spec)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and msg[0].isupper()
    for n in needles:
        assert n in msg, msg


def test_bad_bucket_through_the_cli_exits_2(tmp_path, synthetic_clips):
    res = run_cli("dataset", "scan", synthetic_clips, "-o", tmp_path / "d.jsonl", "--buckets", "950x544x48")
    assert_user_error(res, "950x544x48", "960 or 928", "49 or 41")
    assert not (tmp_path / "d.jsonl").exists()


@given(st.integers(0, 5000))
def test_nearest_valid_values_bracket_and_are_valid(v):
    for step, offset, valid in ((32, 0, lambda x: x >= 32 and x % 32 == 0), (8, 1, is_valid_frame_count)):
        got = nearest_valid(v, step, offset)
        assert all(valid(x) for x in got) and 1 <= len(got) <= 2
        if len(got) == 2:
            lo, hi = sorted(got)
            assert lo <= v <= hi and hi - lo == step
            assert abs(got[0] - v) <= abs(got[1] - v)  # the nearest first
        else:
            assert v < got[0]  # below the smallest valid value


@given(st.integers(0, 1000))
def test_largest_frame_count(n):
    f = largest_frame_count(n)
    if n == 0:
        assert f == 0
    else:
        assert is_valid_frame_count(f) and f <= n < f + 8


# --- assignment ---------------------------------------------------------------------------------------------------

B = parse_buckets("96x64x25;64x96x25;128x128x25;96x64x1")


def test_aspect_ratio_first_then_length():
    p = assign_bucket(ClipShape(192, 128, 100, 24), parse_buckets("128x128x49;96x64x9;96x64x25"))
    assert p.bucket == Bucket(96, 64, 25)  # 3:2 beats square even with fewer frames; 25 beats 9
    portrait = assign_bucket(ClipShape(64, 96, 30, 25), B)
    assert portrait.bucket == Bucket(64, 96, 25) and not portrait.shortened
    square = assign_bucket(ClipShape(500, 500, 30, 25), B)
    assert square.bucket == Bucket(128, 128, 25)


def test_stills_go_to_one_frame_buckets():
    p = assign_bucket(ClipShape(960, 640, 1, None, is_still=True), B)
    assert p.bucket == Bucket(96, 64, 1) and not p.shortened
    # No 1-frame bucket: shortened from the closest one when allowed, else skipped with the reason.
    p = assign_bucket(ClipShape(960, 640, 1, None, is_still=True), parse_buckets("96x64x25"))
    assert p.bucket == Bucket(96, 64, 1) and p.shortened
    s = assign_bucket(ClipShape(960, 640, 1, None, is_still=True), parse_buckets("96x64x25"), allow_shorter=False)
    assert isinstance(s, Skipped) and "still image" in s.reason and "needs 25" in s.reason


def test_short_clips():
    # 15 frames: shorter than every 25-frame bucket -> the longest 8k+1 it fills, at the closest bucket's size.
    p = assign_bucket(ClipShape(96, 64, 15, 30), parse_buckets("96x64x25;128x128x49"))
    assert p.bucket == Bucket(96, 64, 9) and p.shortened and p.frames_available == 15
    # With a 1-frame bucket listed, the shortened 9-frame bucket still wins: it keeps more of the clip.
    assert assign_bucket(ClipShape(96, 64, 15, 30), B).bucket == Bucket(96, 64, 9)
    s = assign_bucket(ClipShape(96, 64, 15, 30), parse_buckets("96x64x25"), allow_shorter=False)
    assert isinstance(s, Skipped) and s.reason.startswith("only 15 frames") and "25" in s.reason
    # Without shortening, the 1-frame bucket is the only one a 15-frame clip fills.
    assert assign_bucket(ClipShape(96, 64, 15, 30), B, allow_shorter=False).bucket == Bucket(96, 64, 1)


def test_target_fps_changes_available_frames():
    clip = ClipShape(96, 64, 48, 24.0)  # 2 s
    assert available_frames(clip) == 48
    assert available_frames(clip, 12) == 24
    assert available_frames(clip, 30) == 60
    # 48 frames fill the listed 25-frame bucket: no shortened 41-frame bucket is made up.
    assert assign_bucket(clip, parse_buckets("96x64x49;96x64x25")).bucket.frames == 25
    assert assign_bucket(clip, parse_buckets("96x64x49;96x64x25"), target_fps=30).bucket.frames == 49
    s = assign_bucket(clip, parse_buckets("96x64x49"), target_fps=12, allow_shorter=False)
    assert isinstance(s, Skipped) and "24 frames at 12 fps" in s.reason
    assert source_frame_indices(4, 24, 12) == [0, 2, 4, 6]
    assert source_frame_indices(5, 24, 30) == [0, 0, 1, 2, 3]
    assert source_frame_indices(3, 24, None) == [0, 1, 2]


def test_resize_and_centre_crop_plan():
    (rw, rh), (x, y), scale = resize_plan(1920, 1080, Bucket(960, 544, 49))
    assert (rw, rh) == (967, 544) and (x, y) == (3, 0) and scale == pytest.approx(544 / 1080)
    p = assign_bucket(ClipShape(100, 100, 9, 24), parse_buckets("64x32x9"))
    assert p.resized == (64, 64) and p.crop == (0, 16) and p.kept_area == 0.5


def test_unusable_shapes_are_skipped():
    assert isinstance(assign_bucket(ClipShape(96, 64, 0, 24), B), Skipped)
    assert isinstance(assign_bucket(ClipShape(0, 64, 9, 24), B), Skipped)


clips = st.builds(ClipShape, width=st.integers(1, 4000), height=st.integers(1, 4000), frames=st.integers(1, 300),
                  fps=st.sampled_from([None, 12.0, 23.976, 24.0, 25.0, 30.0, 60.0]), is_still=st.booleans())
bucket_lists = st.lists(st.builds(Bucket, width=st.integers(1, 40).map(lambda k: 32 * k),
                                  height=st.integers(1, 40).map(lambda k: 32 * k),
                                  frames=st.integers(0, 20).map(lambda k: 8 * k + 1)), min_size=1, max_size=6)


def _aspect_gap(clip, b):
    return abs(math.log(clip.width / clip.height) - math.log(b.width / b.height))


@settings(max_examples=300, deadline=None)
@given(clips, bucket_lists, st.sampled_from([None, 12.0, 24.0, 30.0]), st.booleans())
def test_assignment_properties(clip, buckets, target_fps, allow_shorter):
    if clip.is_still:
        clip = ClipShape(clip.width, clip.height, 1, None, True)
    got = assign_bucket(clip, buckets, target_fps=target_fps, allow_shorter=allow_shorter)
    available = available_frames(clip, target_fps)
    if isinstance(got, Skipped):
        assert not allow_shorter and all(b.frames > available for b in buckets)
        return
    assert isinstance(got, Placement)
    b = got.bucket
    assert is_valid_frame_count(b.frames) and b.frames <= available
    assert (b.width, b.height) in {(x.width, x.height) for x in buckets}
    # A listed bucket is kept as is; a shortened one keeps a listed size and fills the clip's longest 8k+1 count.
    assert got.shortened == (b not in buckets)
    if got.shortened:
        assert allow_shorter and b.frames == largest_frame_count(available)
    # Shortening happens only when the clip fills no listed multi-frame bucket (nor, for a still, a 1-frame one).
    fills_listed = any(x.frames <= available and (x.frames > 1 or available == 1) for x in buckets)
    if got.shortened:
        assert not fills_listed
    # No option (a bucket the clip fills, or any bucket when it gets shortened) has a closer aspect ratio.
    options = [x for x in buckets if x.frames <= available or (allow_shorter and not fills_listed)]
    assert _aspect_gap(clip, b) <= min(_aspect_gap(clip, x) for x in options) + 1e-9
    # The resize covers the bucket and the crop window lies inside the resized picture.
    rw, rh = got.resized
    x, y = got.crop
    assert rw >= b.width and rh >= b.height and 0 <= x <= rw - b.width and 0 <= y <= rh - b.height
    assert 0 < got.kept_area <= 1


# --- batch planning -----------------------------------------------------------------------------------------------


def test_token_budget_gives_each_bucket_its_batch_size():
    still, video = Bucket(960, 544, 1), Bucket(960, 544, 49)
    assert (still.tokens, video.tokens) == (510, 3570)
    assert batch_size_for(still, token_budget=8000) == 15
    assert batch_size_for(video, token_budget=8000) == 2
    assert batch_size_for(video, token_budget=100) == 1  # never zero
    assert batch_size_for(video, batch_size=4) == 4
    plan = plan_batches([still] * 30 + [video] * 4, token_budget=8000, seed=0)
    sizes = sorted((str(b.bucket), len(b.items)) for b in plan)
    assert sizes == [("960x544x1", 15), ("960x544x1", 15), ("960x544x49", 2), ("960x544x49", 2)]


def test_plan_is_deterministic_and_seeded():
    items = [Bucket(96, 64, 9)] * 20 + [Bucket(64, 96, 9)] * 20
    a = plan_batches(items, batch_size=4, seed=3)
    assert a == plan_batches(items, batch_size=4, seed=3)
    assert a != plan_batches(items, batch_size=4, seed=4)


def test_drop_last():
    items = [Bucket(96, 64, 9)] * 10
    plan = plan_batches(items, batch_size=4, drop_last=True)
    assert [len(b.items) for b in plan] == [4, 4]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(parse_buckets("96x64x9;64x96x17;128x128x1;256x128x49")), max_size=60),
       st.one_of(st.none(), st.integers(1, 2000)), st.integers(1, 8), st.integers(0, 2**32), st.booleans())
def test_batch_plan_properties(item_buckets, budget, batch_size, seed, drop_last):
    plan = plan_batches(item_buckets, batch_size=batch_size, token_budget=budget, seed=seed, drop_last=drop_last)
    seen = [i for b in plan for i in b.items]
    assert len(seen) == len(set(seen))
    if not drop_last:
        assert sorted(seen) == list(range(len(item_buckets)))
    for batch in plan:
        assert all(item_buckets[i] == batch.bucket for i in batch.items)  # never mixes buckets
        size = batch_size_for(batch.bucket, batch_size=batch_size, token_budget=budget)
        assert 1 <= len(batch.items) <= size
        if drop_last:
            assert len(batch.items) == size
        if budget is not None and len(batch.items) > 1:
            assert batch.tokens <= budget
    assert plan == plan_batches(item_buckets, batch_size=batch_size, token_budget=budget, seed=seed,
                                drop_last=drop_last)
