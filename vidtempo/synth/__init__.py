"""TempoSynth: procedural videos with exact temporal ground truth (cuts, moving shapes, beeps).

Import-light: nothing heavy is imported here. Use the sub-modules::

    from vidtempo.synth.generate import generate        # videos + annotations + manifest
    from vidtempo.synth.script import sample_script     # the event script of one video
    from vidtempo.synth.render import write_video       # H.264 + AAC mp4 with PyAV
    from vidtempo.synth.annotate import build_split     # annotation records and writers

See ``docs/temposynth.md``.
"""
