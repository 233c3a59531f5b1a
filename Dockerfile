# vipfarm in a container: vipfarmd and vipfarmctl on debian:12-slim.
#
#   docker build -t vipfarm .
#
# The build stage runs exactly what CI runs (`make build`: scripts/setup, then meson with
# -Dwerror=true and ninja; tests/deploy/install.sh fails if this file and the Makefile
# drift apart). The runtime stage holds the binaries, the shared libraries they link, the
# DPDK drivers (PMDs) loaded at run time, and the sample config.
#
# Running it: vipfarmd needs the host's network, its hugepages and the NIC's device nodes.
# The host prepares them as for vipfarmd.service (vipfarmd(8)): hugepages reserved
# (deploy/systemd/vipfarm-hugepages, or vm.nr_hugepages), the farm NIC bound to vfio-pci,
# /etc/vipfarm/vipfarm.toml and its key (mode 0600), and the socket directory:
#   groupadd --system vipfarm; install -d -m 0750 -g vipfarm /run/vipfarm
#
#   docker run -d --name vipfarmd --restart on-failure \
#     --network host \
#     --cap-add NET_ADMIN --cap-add NET_RAW --cap-add SYS_ADMIN --cap-add IPC_LOCK \
#     --cap-add SYS_RAWIO --cap-add SYS_NICE \
#     --ulimit memlock=-1 --ulimit nofile=65536 \
#     --device /dev/vfio/vfio --device /dev/vfio/42 --device /dev/net/tun \
#     -v /dev/hugepages:/dev/hugepages \
#     -v /etc/vipfarm:/etc/vipfarm:ro \
#     -v /run/vipfarm:/run/vipfarm \
#     --user 0:"$(getent group vipfarm | cut -d: -f3)" \
#     vipfarm
#
#   --network host     the TAP (where the application listens on the VIP), the heartbeats
#                      and /metrics live in the host's network namespace.
#   --cap-add ...      what vipfarmd.service keeps: NET_ADMIN (TAP, addresses, promiscuous
#                      mode), NET_RAW (ping checkers, af_packet), SYS_ADMIN (DPDK's physical
#                      addresses, some PMDs), IPC_LOCK (locked DMA memory), SYS_RAWIO (port
#                      I/O PMDs); SYS_NICE because Docker's seccomp profile allows mbind and
#                      set_mempolicy (DPDK's NUMA allocation) only with it. Or, simpler and
#                      wider: --privileged instead of the --cap-add and --device flags.
#   --device           /dev/vfio/vfio and the NIC's IOMMU group (readlink
#                      /sys/bus/pci/devices/0000:3b:00.0/iommu_group gives its number; 42
#                      here), /dev/net/tun for the TAP. mlx5 NICs: /dev/infiniband instead of
#                      /dev/vfio. /sys is visible read-only in the container: DPDK only
#                      reads it.
#   -v /dev/hugepages  the host's hugetlbfs mount. The image runs vipfarmd with
#                      `-- --in-memory` (a crashed daemon's hugepages are free again at
#                      once). Without hugepages, give vipfarmd's arguments after the image
#                      name: `... vipfarm --config /etc/vipfarm/vipfarm.toml -- --no-huge
#                      -m 256` (EAL refuses --in-memory with --no-huge).
#   -v /etc/vipfarm    the config and the cluster key, read-only.
#   -v /run/vipfarm    the admin socket ([api] socket): vipfarmctl on the host uses it.
#   --user 0:GID       root, with the host's vipfarm group as the primary group: the socket
#                      is created root:vipfarm 0660, so operators in that group can use it.
# Reload: `docker kill --signal HUP vipfarmd`. Stop: `docker stop` (SIGTERM; vipfarmd
# leaves the farm and exits within 2 s). vipfarmctl: `docker exec vipfarmd vipfarmctl status`.

FROM debian:12 AS build
WORKDIR /src
# The packages first, in their own layer: it stays cached while the sources change.
COPY scripts/setup scripts/setup
RUN ./scripts/setup
COPY . .
RUN meson setup build -Dwerror=true \
 && ninja -C build

FROM debian:12-slim
# The libraries the binaries link (ldd, mapped to packages with dpkg -S), then the DPDK
# drivers EAL loads from its plugin directory at run time: the mempool handler and the
# buses (always), the TAP, af_xdp and af_packet vdevs, and the PMDs of common server and cloud NICs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libc6 libgcc-s1 libstdc++6 zlib1g libbsd0 libmd0 libnuma1 libfdt1 \
      libssl3 libboost-program-options1.74.0 libtomlplusplus3 libpugixml1v5 \
      libprometheus-cpp-core1.0 \
      librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-rcu23 \
      librte-ring23 librte-kvargs23 librte-telemetry23 librte-net23 librte-meter23 \
      librte-mempool-ring23 librte-bus-pci23 librte-bus-vdev23 \
      librte-net-tap23 librte-net-af-xdp23 librte-net-af-packet23 \
      librte-net-i40e23 librte-net-ice23 librte-net-iavf23 librte-net-ixgbe23 \
      librte-net-e1000-23 librte-net-mlx5-23 librte-net-bnxt23 librte-net-ena23 \
      librte-net-virtio23 librte-net-vmxnet3-23 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/vipfarmd /src/build/vipfarmctl /usr/local/bin/
COPY --from=build /src/deploy/vipfarm.toml /etc/vipfarm/vipfarm.toml
# Healthy while the daemon answers on its admin socket (the default path): status exits 0,
# or 1 when nobody answers. (Not `state`: it needs [membership].)
HEALTHCHECK --interval=30s --timeout=5s CMD ["/usr/local/bin/vipfarmctl", "status"]
ENTRYPOINT ["/usr/local/bin/vipfarmd"]
CMD ["--config", "/etc/vipfarm/vipfarm.toml", "--", "--in-memory"]
