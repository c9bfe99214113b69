"""A small synthetic OhioT1DM XML file, written by the tests (the real data is under a use agreement)."""

from __future__ import annotations

from datetime import datetime, timedelta

FMT = "%d-%m-%Y %H:%M:%S"
START = datetime(2021, 12, 7, 1, 17, 0)  # CGM readings off the 5-minute grid, as in OhioT1DM


def ts(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).strftime(FMT)


def ohio_xml(n_readings: int = 60, *, glucose=None, extra: str = "") -> str:
    """Readings every 5 min from 01:17; basal 1.2 U/h from 01:00, temp basal 0.0 U/h 02:00-02:30,
    a 3 U normal bolus at 01:40, a 30 g meal at 01:41, and elements the reader must ignore."""
    glucose = glucose or (lambda i: 100 + 2 * i)
    g = "\n".join(f'    <event ts="{ts(5 * i)}" value="{glucose(i)}"/>' for i in range(n_readings))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<patient id="999" weight="99" insulin_type="Novalog">
  <glucose_level>
{g}
  </glucose_level>
  <finger_stick><event ts="{ts(3)}" value="120"/></finger_stick>
  <basal><event ts="07-12-2021 01:00:00" value="1.2"/></basal>
  <temp_basal><event ts_begin="07-12-2021 02:00:00" ts_end="07-12-2021 02:30:00" value="0.0"/></temp_basal>
  <bolus><event ts_begin="07-12-2021 01:40:00" ts_end="07-12-2021 01:40:00" type="normal" dose="3.0" bwz_carb_input="30"/></bolus>
  <meal><event ts="07-12-2021 01:41:00" type="Lunch" carbs="30"/></meal>
  <exercise/>
  <basis_heart_rate><event ts="{ts(1)}" value="80"/></basis_heart_rate>
{extra}
</patient>
"""
