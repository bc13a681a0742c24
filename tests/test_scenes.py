"""The demo world's measures (`ltx_lora.fixtures.scenes`): what the demo prints and the learning test asserts on
must tell the concept from every colour and tone of the base world, also after H.264/AAC and the clip reader."""

import random

import numpy as np
import pytest

from ltx_lora.data.decode import read_clip
from ltx_lora.fixtures import scenes


def test_concept_share_tells_the_concept_from_every_base_colour():
    rng = random.Random(0)
    for colour in scenes.COLOURS:
        for shape in scenes.SHAPES:
            base = scenes.render_frames(scenes.random_scene(rng, colour=colour, shape=shape))
            concept = scenes.render_frames(scenes.random_scene(rng, colour=colour, shape=shape, concept=True))
            assert scenes.concept_share(base) == 0.0 and scenes.frames_showing_concept(base) == 0, colour
            assert scenes.concept_share(concept) > 0.9 and scenes.frames_showing_concept(concept) == scenes.FRAMES
            # a dim shape (what the tiny model draws) keeps its hue
            dim = (concept.astype(np.float32) * 0.6).astype(np.uint8)
            assert scenes.concept_share(dim) > 0.9, colour
    assert scenes.concept_share(np.full((1, 8, 8, 3), 30, np.uint8)) == 0.0  # nothing drawn


def test_colour_share_names_each_world_colour_and_only_it():
    rng = random.Random(3)
    for colour in scenes.COLOURS:
        frames = scenes.render_frames(scenes.random_scene(rng, colour=colour))
        assert scenes.colour_share(frames, colour) > 0.9, colour
        assert all(scenes.colour_share(frames, other) < 0.05 for other in scenes.PALETTE if other != colour), colour


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_dominant_hz_finds_each_tone(rate):
    rng = random.Random(1)
    for shape, concept in (("disc", False), ("square", False), ("disc", True)):
        scene = scenes.random_scene(rng, shape=shape, concept=concept)
        hz = scenes.dominant_hz(scenes.render_tone(scene, 0.375, rate), rate)
        assert abs(hz - scene.tone_hz) < 0.03 * scene.tone_hz, (shape, concept, hz)


def test_a_written_clip_keeps_its_colour_and_pitch_through_the_clip_reader(tmp_path):
    scene = scenes.random_scene(random.Random(2), colour="green", shape="square", concept=True)
    path = scenes.write_scene_clip(tmp_path / "zxq.mp4", scene)
    assert path.with_suffix(".txt").read_text().strip() == scene.caption and scene.caption.startswith("zxq a green")
    clip = read_clip(path, scenes.SIZE, scenes.SIZE, scenes.FRAMES)  # what preprocess reads
    frames = ((clip.frames.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert scenes.frames_showing_concept(frames) == scenes.FRAMES
    assert abs(scenes.concept_share(frames) - scenes.concept_share(scenes.render_frames(scene))) < 0.03
    assert clip.audio is not None
    assert abs(scenes.dominant_hz(clip.audio.numpy(), clip.audio_rate) - scenes.CONCEPT_HZ) < 40
