"""Pure estimators: parameters, FLOPs, memory, communication, time, cost, scaling laws.

Every function takes typed values (ModelSpec, Hardware, TrainLayout, numbers) and never
reads a catalog or a file. Units are in names: _bytes, _s, _usd, _flop_per_s.
"""
