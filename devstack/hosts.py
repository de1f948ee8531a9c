"""Several hosts on one machine, for tests of what crosses a network: a network namespace per
host, each joined by a veth pair to a bridge in a namespace of its own (the switch). The machine
itself joins the switch too, as the first address, so a test (or an SMTP server it runs) can
reach every host and be reached.

Faults are done the way a network does them: `partition` drops packets with iptables (both ways,
or one way), `lossy` drops a share of them at random, and a host's processes can be frozen
(SIGSTOP) by the caller. Needs root, `ip` (iproute2) and `iptables`; `available()` says why not.
Added latency needs the kernel's netem qdisc, which not every kernel has: `latency_available()`.
"""
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from types import TracebackType


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def available() -> str | None:
    """None when hosts can be built here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"no `{tool}`: install Debian's {package} (make test-deps does, as root)"
    probe = f"saga-probe-{uuid.uuid4().hex[:6]}"
    if _run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "this machine refuses `ip netns add` (no CAP_SYS_ADMIN?)"
    try:
        done = _run("ip", "netns", "exec", probe, "iptables", "-L", "-n", check=False)
        if done.returncode != 0:
            return f"iptables does not work in a namespace here: {done.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    rules: list[list[str]] = field(default_factory=list)  # iptables rules added, to undo
    interface: str = ""  # its end of its link to the switch
    delayed: bool = False

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this host (`ip netns exec` execs it: same pid, same signals)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def _rule(self, *rule: str) -> list[str]:
        _run("ip", "netns", "exec", self.namespace, "iptables", "-A", *rule)
        self.rules.append(list(rule))
        return list(rule)

    def partition(self, peer: "Host", direction: str = "both") -> list[list[str]]:
        """Drop packets between this host and `peer`, seen from this host: `both`, `out` (what
        this host sends never arrives) or `in` (what the peer sends never arrives). Nothing is
        refused: connections hang, as in a real partition. Returns the rules, for heal()."""
        if direction not in ("both", "in", "out"):
            raise ValueError(f"direction {direction!r}: both, in or out")
        rules = []
        if direction in ("both", "out"):
            rules.append(self._rule("OUTPUT", "-d", peer.address, "-j", "DROP"))
        if direction in ("both", "in"):
            rules.append(self._rule("INPUT", "-s", peer.address, "-j", "DROP"))
        return rules

    def lossy(self, peer: "Host", share: float) -> list[list[str]]:
        """Drop `share` of the packets either way between this host and `peer`, at random.
        Returns the rules, for heal()."""
        return [self._rule(chain, flag, peer.address, "-m", "statistic", "--mode", "random",
                           "--probability", f"{share:.2f}", "-j", "DROP")
                for chain, flag in (("OUTPUT", "-d"), ("INPUT", "-s"))]

    def delay(self, ms: int, jitter_ms: int = 0) -> None:
        """Every packet this host sends waits `ms` (needs netem: `latency_available()`)."""
        _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "add", "dev", self.interface,
             "root", "netem", "delay", f"{ms}ms", f"{jitter_ms}ms")
        self.delayed = True

    def undelay(self) -> None:
        if self.delayed:
            _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "del", "dev",
                 self.interface, "root", check=False)
            self.delayed = False

    def heal(self, rules: list[list[str]] | None = None) -> None:
        """Undo `rules` (as partition() or lossy() returned them), or every fault."""
        if rules is None:
            self.undelay()
        for rule in reversed(rules if rules is not None else list(self.rules)):
            _run("ip", "netns", "exec", self.namespace, "iptables", "-D", *rule, check=False)
            if rule in self.rules:
                self.rules.remove(rule)


def latency_available() -> str | None:
    probe = f"saga-probe-{uuid.uuid4().hex[:6]}"
    _run("ip", "netns", "add", probe)
    try:
        _run("ip", "-n", probe, "link", "set", "lo", "up")
        done = _run("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
                    "netem", "delay", "10ms", check=False)
        return None if done.returncode == 0 else \
            f"no netem qdisc in this kernel ({done.stderr.strip()})"
    finally:
        _run("ip", "netns", "del", probe, check=False)


def _free_subnet() -> int:
    """A 10.213.N.0/24 no network on this machine uses yet (another run's, or one left over)."""
    taken = _run("ip", "-4", "-o", "addr", "show", check=False).stdout
    for subnet in range(100, 250):
        if f"10.213.{subnet}." not in taken:
            return subnet
    raise RuntimeError("no free 10.213.N.0/24 left: stale test networks? (ip netns list)")


class Network:
    """Hosts on a /24 of their own; `Network(["broker", "db", "app", "payment"])`."""

    def __init__(self, names: list[str], subnet: int | None = None) -> None:
        self.tag = uuid.uuid4().hex[:5]  # several networks (and runs) side by side
        self.subnet = subnet if subnet is not None else _free_subnet()
        self.switch = f"saga-{self.tag}-sw"
        self.gateway = f"10.213.{self.subnet}.1"  # the machine itself
        self.hosts = {name: Host(name, f"saga-{self.tag}-{name}",
                                 f"10.213.{self.subnet}.{index + 2}")
                      for index, name in enumerate(names)}
        self._links: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self) -> "Network":
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        self._join(None, self.gateway)
        for host in self.hosts.values():
            _run("ip", "netns", "add", host.namespace)
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
            self._join(host, host.address)
        return self

    def _join(self, host: Host | None, address: str) -> None:
        index = len(self._links)
        inside, port = f"sg{self.tag}h{index}", f"sg{self.tag}p{index}"  # at most 15 characters
        _run("ip", "link", "add", inside, "type", "veth", "peer", "name", port)
        self._links.append(inside)
        _run("ip", "link", "set", port, "netns", self.switch)
        _run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", port, "up")
        where = ["ip"] if host is None else ["ip", "-n", host.namespace]
        if host is not None:
            _run("ip", "link", "set", inside, "netns", host.namespace)
            host.interface = inside
        _run(*where, "addr", "add", f"{address}/24", "dev", inside)
        _run(*where, "link", "set", inside, "up")

    def stop(self) -> None:
        for host in self.hosts.values():
            _run("ip", "netns", "del", host.namespace, check=False)
        _run("ip", "netns", "del", self.switch, check=False)
        # the machine's end of its own link goes with its peer; this catches a half-built one
        _run("ip", "link", "del", f"sg{self.tag}h0", check=False)

    def __enter__(self) -> "Network":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
