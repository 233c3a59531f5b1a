// Every scalar per-lcore counter of the data plane, declared once: X(field, key, metric,
// help). `field` is its LcoreCounters member, `key` its JSON pointer in `vipfarmctl
// counters`, `metric` its Prometheus counter family and `help` that family's help text.
// LcoreCounters, Dataplane::totals(), the admin JSON and the metrics are generated from it
// (as VPP's lb_foreach_vip_counter), so none can miss a counter. Directed VIPs' new
// requesters: admitted + excess + capped + refused = every new requester seen.
#pragma once

#define VIPFARM_LCORE_COUNTERS(X)                                                                  \
  X(rx_packets, "/rx_packets", "vipfarm_rx_packets_total", "Frames received on the uplink.")       \
  X(rx_bytes, "/rx_bytes", "vipfarm_rx_bytes_total", "Bytes received on the uplink.")              \
  X(arp_replies, "/arp_replies", "vipfarm_arp_replies_total",                                      \
    "ARP requests for a VIP answered (its virtual MAC; a directed VIP: this node's MAC).")         \
  X(nd_replies, "/nd_replies", "vipfarm_nd_replies_total",                                         \
    "Neighbour solicitations for a VIP answered.")                                                 \
  X(reply_failures, "/reply_failures", "vipfarm_reply_failures_total",                             \
    "ARP/ND requests that could not be answered.")                                                 \
  X(announcements, "/announcements", "vipfarm_announcements_total",                                \
    "Gratuitous ARP / unsolicited NA sent.")                                                       \
  X(exception_tx, "/exception_tx", "vipfarm_exception_tx_packets_total",                           \
    "Frames handed to the kernel through the TAP.")                                                \
  X(exception_rx, "/exception_rx", "vipfarm_exception_rx_packets_total",                           \
    "Frames the kernel sent through the TAP.")                                                     \
  X(exception_ring_full, "/exception_ring_full", "vipfarm_exception_ring_full_total",              \
    "Frames for the kernel dropped because it fell behind (bounded ring full).")                   \
  X(exception_tx_drops, "/exception_tx_drops", "vipfarm_exception_tx_drops_total",                 \
    "Frames the TAP did not take.")                                                                \
  X(uplink_tx_from_kernel, "/uplink_tx_from_kernel", "vipfarm_uplink_tx_packets_total",            \
    "Frames from the kernel sent on the uplink.")                                                  \
  X(uplink_tx_drops, "/uplink_tx_drops", "vipfarm_uplink_tx_drops_total",                          \
    "Frames the uplink did not take.")                                                             \
  X(to_uplink_ring_full, "/to_uplink_ring_full", "vipfarm_uplink_ring_full_total",                 \
    "Frames from the kernel dropped before the uplink.")                                           \
  X(kernel_rewrites, "/kernel_rewrites", "vipfarm_kernel_rewrites_total",                          \
    "Kernel ARP/ND frames naming a VIP given the virtual MAC.")                                    \
  X(lease_expired, "/lease_expired", "vipfarm_lease_expired_total",                                \
    "Farm packets (any bucket's) refused because the ownership lease had lapsed (stalled "         \
    "control thread).")                                                                            \
  X(exception_stalled, "/exception_stalled", "vipfarm_exception_stalled_total",                    \
    "Farm packets (any bucket's) refused because the exception path (the main lcore) had not "     \
    "run for 100 ms.")                                                                             \
  X(exception_stale, "/exception_stale", "vipfarm_exception_stale_total",                          \
    "Frames that waited for the kernel while the exception path was stalled, dropped when it ran " \
    "again.")                                                                                      \
  X(foreign_unicast, "/foreign_unicast", "vipfarm_foreign_unicast_total",                          \
    "Host-bound frames addressed to another host's MAC (flooded by the switch), dropped.")         \
  X(forward_refused, "/directed/forward_refused", "vipfarm_forward_refused_total",                 \
    "Directed VIPs: frames another node forwarded for a bucket not owned here, dropped (a frame "  \
    "is never forwarded twice).")                                                                  \
  X(forward_no_mac, "/directed/forward_no_mac", "vipfarm_forward_no_mac_total",                    \
    "Directed VIPs: frames not forwarded because the owner's MAC is not known yet (or the bucket " \
    "has no owner).")                                                                              \
  X(directed_silent, "/directed/silent", "vipfarm_directed_silent_total",                          \
    "Directed VIPs: ARP/ND requests left to the requester's ARP owner, another node.")             \
  X(directed_announcements, "/directed/announcements", "vipfarm_directed_announcements_total",     \
    "Directed VIPs: unicast ARP replies sent to known requesters this node became the ARP owner "  \
    "of (after a view change, and with the periodic announcements).")                              \
  X(requesters_admitted, "/directed/requesters/admitted",                                          \
    "vipfarm_directed_requesters_admitted_total",                                                  \
    "Directed VIPs: new ARP/ND requesters remembered within the admission rate.")                  \
  X(requesters_excess, "/directed/requesters/excess", "vipfarm_directed_requesters_excess_total",  \
    "Directed VIPs: new ARP/ND requesters remembered past the admission rate (a flood's share: "   \
    "kept only in free slots or in place of other excess ones).")                                  \
  X(requesters_capped, "/directed/requesters/capped", "vipfarm_directed_requesters_capped_total",  \
    "Directed VIPs: new requesters from a MAC at its cap, remembered in that MAC's own least "     \
    "recently seen slot.")                                                                         \
  X(requesters_refused, "/directed/requesters/refused",                                            \
    "vipfarm_directed_requesters_refused_total",                                                   \
    "Directed VIPs: new requesters not remembered (their set held none they may displace).")       \
  X(requesters_displaced, "/directed/requesters/displaced",                                        \
    "vipfarm_directed_requesters_displaced_total",                                                 \
    "Directed VIPs: admitted requesters displaced by newer admitted ones (a LAN with more "        \
    "requesters than the table, or a flood's admitted share).")                                    \
  X(requesters_confirmed, "/directed/requesters/confirmed",                                        \
    "vipfarm_directed_requesters_confirmed_total",                                                 \
    "Directed VIPs: confirmations of a remembered requester by its traffic (SYN, datagram) from "  \
    "the same address and MAC, at most one a second each.")
