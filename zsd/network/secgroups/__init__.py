"""Security groups: typed rules, and their enforcement by one nftables ruleset per host.

Layout (each module has one job; nothing here talks to the API or the cluster store):

- ``rules``:       what a rule matches and does (frozen dataclasses, enums);
- ``validation``:  rule and group-name checks naming the field (``rules[3].port_range``);
- ``group``:       a group's ordered rule list (priorities, insert/delete/move, built-in rule);
- ``transfer``:    export a group's rules as JSON, import them all or nothing;
- ``hostmodel``:   the compiler's typed boundary (host NICs, members, counter references);
- ``packing``:     runs of same-action rules packed into few set lookups, first match kept;
- ``groupchains``: one group compiled into chains, counter maps and named counters;
- ``compiler``:    one host's whole ruleset (the design and default policy are documented there);
- ``nftobjects``:  nftables objects as values; full and diff transactions in libnftables JSON;
- ``nftapply``:    applying atomically with libnftables, error translation, hit counters;
- ``zones``:       a conntrack zone per port group (bridge), stable and collision-free;
- ``pickup``:      NICs that just arrived pick their connections up mid-stream for a while;
- ``admission``:   the host's policy evaluated in Python: would it admit this connection as new?
- ``revocation``:  after an apply, delete the connections the new policy no longer admits;
- ``ctnetlink``:   the kernel's conntrack table through pyroute2 (read a zone, delete an entry).
"""
