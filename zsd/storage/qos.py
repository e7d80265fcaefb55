"""Volume QoS as libvirt hands it to QEMU's throttling: the disk's ``<iotune>``.

QEMU throttles with a leaky bucket per limit: the base rate refills it, a
``*_max`` burst may drain it for ``*_max_length`` seconds. The compute issue
puts this element into a VM's disk (and applies changes live with
virDomainSetBlockIoTune, whose parameter names are the same).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from zsd.storage.model import Qos

# zsd field -> libvirt element, in the order libvirt itself writes them.
_ELEMENTS = (
    ("total_bytes_per_sec", "total_bytes_sec"),
    ("read_bytes_per_sec", "read_bytes_sec"),
    ("write_bytes_per_sec", "write_bytes_sec"),
    ("total_iops", "total_iops_sec"),
    ("read_iops", "read_iops_sec"),
    ("write_iops", "write_iops_sec"),
    ("total_bytes_per_sec_max", "total_bytes_sec_max"),
    ("read_bytes_per_sec_max", "read_bytes_sec_max"),
    ("write_bytes_per_sec_max", "write_bytes_sec_max"),
    ("total_iops_max", "total_iops_sec_max"),
    ("read_iops_max", "read_iops_sec_max"),
    ("write_iops_max", "write_iops_sec_max"),
)


def iotune_params(qos: Qos, *, group: str | None = None) -> dict[str, int | str]:
    """libvirt's iotune parameters for ``qos`` (only the limits that are set)."""
    params: dict[str, int | str] = {}
    for attr, element in _ELEMENTS:
        value = getattr(qos, attr)
        if value:
            params[element] = value
            if element.endswith("_max") and qos.burst_seconds:
                params[f"{element}_length"] = qos.burst_seconds
    if group is not None and params:
        params["group_name"] = group
    return params


def iotune_element(qos: Qos, *, group: str | None = None) -> ET.Element | None:
    """The ``<iotune>`` child of a ``<disk>``, or None when nothing is limited."""
    params = iotune_params(qos, group=group)
    if not params:
        return None
    iotune = ET.Element("iotune")
    for key, value in params.items():
        ET.SubElement(iotune, key).text = str(value)
    return iotune
