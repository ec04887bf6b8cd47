"""Unit constants. Every conversion in clusteropt goes through these names.

Decimal (SI) prefixes for rates and datasheet 'GB/s'; binary prefixes for memory
capacities that datasheets print as 'GB' but mean GiB (an '80 GB' H100 holds 80 GiB).
Nothing else in the package multiplies by a bare 1e9 or 1024**3.
"""

KB = 10**3
MB = 10**6
GB = 10**9
TB = 10**12
PB = 10**15

KIB = 2**10
MIB = 2**20
GIB = 2**30
TIB = 2**40

TERA = 1e12  # TFLOP/s -> FLOP/s
PETA = 1e15
GIGABIT = 1e9 / 8  # bytes per Gbit (Gbit/s -> bytes/s)

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
HOURS_PER_YEAR = 8766.0  # 365.25 days

# Bytes per element by numeric format.
BYTES_PER = {
    "fp32": 4,
    "tf32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
}
