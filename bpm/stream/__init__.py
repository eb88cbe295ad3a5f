"""Real-time re-identification on camera streams: frames -> detections -> tracks -> identities.

``bpm stream`` wires these modules together (:mod:`bpm.stream.pipeline`); each module has one job:
reading cameras (:mod:`.sources`), detecting people (:mod:`.detectors`), per-camera tracking
(:mod:`.tracking`), the identity gallery across cameras and time (:mod:`.gallery`), writing results
(:mod:`.outputs`, :mod:`.html`, :mod:`.video`) and scoring them (:mod:`.evaluate`).
OpenCV, ONNX Runtime, ``trackers``' ByteTrack and ``motmetrics`` do the heavy lifting.
"""
