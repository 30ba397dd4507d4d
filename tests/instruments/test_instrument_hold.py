"""One campaign at a time on an EPICS instrument (instruments._hold), against the caproto
IOC of ``simulators.reactor_ioc``.

Found in review: two `run`s on one instrument file, in two stores, both drove the same IOC;
their setpoints interleaved, one's safe state landed in the other's trial, and a measurement
was stored under the other's trial. The other campaign's hold is taken in this process (a
``flock`` of its own file description, as another process's would be).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from epics_ioc import IOC

from instruments._epics import declared_spec
from instruments._hold import InstrumentBusy, hold_instrument, instrument_identity
from loop import Runner, Store, load_campaign

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_second_campaign_on_a_held_instrument_is_refused_before_anything_is_written(
    epics_ioc: IOC, tmp_path: Path
) -> None:
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    shutil.copy(ROOT / "campaigns" / "instruments" / "epics_reactor.yaml", tmp_path / "r.yaml")
    text = (ROOT / "campaigns" / "epics" / "epics_reactor.yaml").read_text()
    text = text.replace("../instruments/epics_reactor.yaml", "r.yaml")
    text = text.replace("kind: botorch", "kind: sobol").replace("max_trials: 10", "max_trials: 2")
    (tmp_path / "c.yaml").write_text(text)
    loaded = load_campaign(tmp_path / "c.yaml")
    spec = declared_spec(loaded.campaign.instrument, tmp_path)
    identity = instrument_identity(spec)
    port = os.environ["EPICS_CA_SERVER_PORT"]  # this IOC's network: other IOCs, other PVs
    # one entry per PV written, each on this IOC's network (a motor IOC's fixture may have
    # added its own address to the list)
    networks = {entry.rsplit(" ", 1)[0] for entry in identity}
    assert len(networks) == 1 and f"127.0.0.1:{port}" in networks.pop(), identity
    assert any(pv.endswith("temp:SP") for pv in identity)
    other = hold_instrument(spec, holder="campaign 'other' (id 3) in sqlite:///other.db")
    assert other is not None
    puts = len(epics_ioc.puts())
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with pytest.raises(InstrumentBusy) as busy:
            Runner(loaded, store).run()
        assert "campaign 'other' (id 3) in sqlite:///other.db, pid" in str(busy.value)
        assert store.campaigns() == []  # refused before the campaign was stored
        assert len(epics_ioc.puts()) == puts  # nothing written, no safe state either
        other.release()
        assert Runner(loaded, store).run().completed == 2
        again = hold_instrument(spec, holder="after")  # the run let go of it
        assert again is not None
        again.release()
    finally:
        store.close()
