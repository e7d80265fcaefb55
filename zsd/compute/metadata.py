"""zsd's facts inside a domain's <metadata>: which VM (uid, name) and its whole spec.

A restarted zsd reads these back from every domain libvirt has and so re-adopts
the running VMs without touching them; domains without this element are not
zsd's and are left alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from zsd.compute.spec import VmSpec

NAMESPACE = "https://zsd.dev/xmlns/vm/1"
PREFIX = "zsd"
_TAG = f"{{{NAMESPACE}}}vm"

ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True, kw_only=True)
class VmFacts:
    spec: VmSpec
    generation: int
    """Bumped on every change zsd makes to the definition (offline update, hot-plug)."""


def element(facts: VmFacts, *, namespace: str = NAMESPACE) -> ET.Element:
    ns = f"{{{namespace}}}" if namespace else ""
    attrs = {"uid": facts.spec.uid, "name": facts.spec.name, "generation": str(facts.generation)}
    vm = ET.Element(f"{ns}vm", attrs)
    ET.SubElement(vm, f"{ns}spec").text = facts.spec.to_json()
    return vm


def metadata_xml(facts: VmFacts) -> str:
    """The element without its namespace, as virDomainSetMetadata wants it (libvirt
    puts it into NAMESPACE under PREFIX itself)."""
    return ET.tostring(element(facts, namespace=""), encoding="unicode")


def read(domain_xml: str) -> VmFacts | None:
    """The facts in a domain's XML, or None for a domain zsd did not make (or whose
    metadata is unreadable: then it is not adopted, and never modified)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    node = root.find(f"metadata/{_TAG}")
    if node is None:
        return None
    spec_text = node.findtext(f"{{{NAMESPACE}}}spec")
    if not spec_text:
        return None
    try:
        spec = VmSpec.from_json(spec_text)
        generation = int(node.get("generation", "0"))
    except (ValueError, TypeError, KeyError):
        return None
    return VmFacts(spec=spec, generation=generation)
