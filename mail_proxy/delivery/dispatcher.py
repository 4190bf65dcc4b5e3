"""The dispatcher: promote due messages, recover lost leases, claim fairly, send.

It waits on three things (a wake event, the poll timer, the stop event) and shuts down in
logged steps: stop claiming, give back what has not started, finish in-flight sends up to a
timeout, then cancel (delivery.md §2, §10). ``run_once`` runs a single cycle for tests.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mail_proxy.delivery import leases, ratelimit
from mail_proxy.delivery.accounts import AccountConfigs
from mail_proxy.delivery.outcomes import Claimed, Recorder
from mail_proxy.delivery.sender import Sender
from mail_proxy.delivery.slots import SendSlots
from mail_proxy.manager.core import now
from mail_proxy.store.errors import StoreUnavailable

log = logging.getLogger("mail_proxy.delivery")
RECOVERY_INTERVAL = 5.0


@dataclass
class Lane:
    """Claimed messages of one account, and the send tasks working through them."""

    key: tuple[str, str]
    heap: list[tuple[tuple[int, int, int], Claimed]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    in_flight: int = 0
    # the messages in the heap or in flight: a message claimed again while this worker
    # still holds it (another worker recovered it while this one was frozen) is not
    # queued twice, and the heap never holds two equal keys (it would compare messages)
    pks: set[int] = field(default_factory=set)

    @property
    def held(self) -> int:
        return len(self.heap) + self.in_flight

    @property
    def running(self) -> int:
        """Send loops still working. A loop that found the heap empty has returned but
        leaves ``tasks`` only when its done-callback runs, a loop iteration later; counted
        as running, it once left a claim that landed in between with no loop at all."""
        return sum(1 for task in self.tasks if not task.done())

    @property
    def waiting(self) -> int:
        """Claimed messages not started yet: what ``batch_size`` bounds (in-flight ones
        are bounded by the account's connections and the worker's send slots)."""
        return len(self.heap)


class Dispatcher:
    def __init__(self, core: Any, *, owner: str, smtp: Any, fetcher: Any | None = None,
                 metrics: Any | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.core = core
        self.owner = owner
        self.smtp = smtp
        self.metrics = metrics
        self.configs = AccountConfigs(core)
        self.recorder = Recorder(core.store, owner)
        self.leases = leases.LeaseGuard(core.store, owner, lambda: self.held)
        self.sender = Sender(core, configs=self.configs, recorder=self.recorder, smtp=smtp,
                             fetcher=fetcher, metrics=metrics,
                             on_event=on_event or (lambda _t: None), lease_guard=self.leases)
        self.lanes: dict[tuple[str, str], Lane] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._slots = SendSlots(core.settings.max_concurrent_sends)
        self._rotation = 0
        self._last_recovery = 0.0
        self._next_due: int | None = None
        # accounts whose windows are full: until when, and under which limits
        self._rate_blocked: dict[tuple[str, str], tuple[int, ratelimit.Limits]] = {}
        # room left in an account's windows: (second read, slots or None, limits read for)
        self._room: dict[tuple[str, str], tuple[int, int | None, ratelimit.Limits]] = {}
        self._more_ready = False
        self._in_cycle = False
        self._freed: set[tuple[str, str]] = set()  # lanes at low water during a cycle
        self._renewer: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # sends whose outcome is being recorded

    # wake-ups ----------------------------------------------------------------------------
    def wake(self, _tenant_id: str | None = None) -> None:
        self._next_due = None  # a new deferred message may be due earlier than we thought
        self._wake.set()

    @property
    def held(self) -> int:
        return sum(lane.held for lane in self.lanes.values())

    # main loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._renewer = asyncio.create_task(self._renew_loop())
        backoff = 1.0
        try:
            while not self._stopping:
                # Cleared before the cycle reads anything: a wake-up during the cycle (a
                # send freeing capacity, a new message) is not lost, it starts the next one.
                self._wake.clear()
                try:
                    claimed = await self.run_once()
                    backoff = 1.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database down: keep running, retry with backoff
                    # a bug gets its traceback (first failure of a streak) so it can be found
                    log.error("dispatcher cycle failed (%s); retrying in %.0f s", exc, backoff,
                              exc_info=backoff == 1.0 and not isinstance(exc, StoreUnavailable))
                    self._wake.clear()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if claimed == 0 or not self._more_ready:
                    await self._sleep(self.core.settings.send_loop_interval)
        finally:
            # A drain stops this loop at once but still waits for sends in flight, up to
            # shutdown_timeout: their leases must keep being renewed until it ends (drain
            # stops the renewer itself), or another worker would take and resend them.
            if not self._stopping:
                self._renewer.cancel()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def run_once(self) -> int:
        """One cycle: promotion, recovery when due, immediate pass, fair pass."""
        self._in_cycle = True
        try:
            return await self._cycle()
        finally:
            self._in_cycle = False
            freed, self._freed = self._freed, set()
            lanes = [self.lanes.get(key) for key in freed]
            if any(lane is None or self._low_water(lane) for lane in lanes):
                self._wake.set()  # a lane the cycle did not refill (or that was drained)

    async def _cycle(self) -> int:
        settings = self.core.settings
        if not settings.dispatch_enabled or self._stopping:
            return 0
        self._slots.resize(settings.max_concurrent_sends)
        t = now()
        await self._promote(t)
        if time.monotonic() - self._last_recovery >= RECOVERY_INTERVAL:
            self._last_recovery = time.monotonic()
            recovered = await leases.recover_expired(
                self.core.store, max_retries=settings.max_retries, owner=self.owner,
                holding=self._holding)
            if self.metrics is not None:
                for tenant_id, account_id, failed in recovered:
                    if failed:  # T14b ends the message in error (metrics.md: gmp_errors_total)
                        self.metrics.child("errors_total", tenant_id, account_id).inc()
        claimed = await self._claim(t)
        if self._stopping and claimed:
            # The drain started while this claim was in progress and has already given
            # back what it saw; these would otherwise keep their lease until it expires.
            async with self.core.store.transaction() as tx:
                await tx.execute("release_all_mine", me=self.owner, now=now(),
                                 pks=[m.pk for m in claimed])
            return 0
        for msg in claimed:
            self._enqueue(msg)
        for lane in list(self.lanes.values()):
            if lane.heap:
                # No-op when the lane's loops are running; otherwise held messages would
                # wait (their leases renewed) for a claim that never comes at low water.
                self._spawn(lane)
        return len(claimed)

    async def _promote(self, t: int) -> None:
        if self._next_due is None:
            due = await self.core.store.fetch_value("next_due_at")
            self._next_due = int(due) if due is not None else t + 60
        if self._next_due <= t:
            async with self.core.store.transaction() as tx:
                await tx.execute("promote_due", now=t)
            self._next_due = None

    async def _claim(self, t: int) -> list[Claimed]:
        settings = self.core.settings
        store = self.core.store
        accounts = await store.fetch("dispatch_accounts", now=t)
        plan: list[tuple[str, str, int, list[str]]] = []
        tenant_room: dict[str, int] = {}
        if accounts:
            start = self._rotation % len(accounts)
            self._rotation += 1
            accounts = accounts[start:] + accounts[:start]
        limited: list[str] = []  # accounts whose priority-0 messages the pre-check governs
        checked: set[tuple[str, str]] = set()  # configurations checked against their rows
        for row in accounts:
            key = (row["tenant_id"], row["account_id"])
            checked.add(key)
            config = await self.configs.get(*key, row_stamp=(
                row["account_pk"], max(row["account_changed_at"], row["tenant_changed_at"])))
            if config is None:
                continue
            limits = config.limits
            blocked = self._rate_blocked.get(key)
            if blocked is not None:
                # The mark holds only for the limits that set it: a limit raised, removed
                # or switched to reject takes effect with the configuration (5 s at most),
                # not at the old window's free time (up to a day away).
                if blocked[0] > t and blocked[1] == limits:
                    limited.append(f"{key[0]}/{key[1]}")
                    continue
                del self._rate_blocked[key]
            if (limits.tenant or (limits.account and limits.behavior == "defer")) \
                    and await self._tight(key, limits, t):
                limited.append(f"{key[0]}/{key[1]}")
            lane = self.lanes.get(key)
            if lane is not None and not self._low_water(lane):
                continue  # well stocked: claimed again at low water, in one bigger claim
            capacity = config.batch_size - (lane.waiting if lane else 0)
            if capacity <= 0:
                continue
            # reject accounts: only the tenant's windows (always defer) are pre-checked
            if limits.account and limits.behavior == "defer":
                left, free_at = await ratelimit.remaining(
                    store, key[0], key[1], ratelimit.Limits(account=limits.account, tenant=()), t)
                if left is not None and left <= 0:
                    self._rate_blocked[key] = (free_at or t + 1, limits)
                    continue
                # held messages that have not reserved yet will need slots too
                capacity = min(capacity, (left or 0) - (lane.held if lane else 0))
            if limits.tenant:
                room = await self._tenant_room(key, limits, t, tenant_room)
                if room is None:
                    continue  # the tenant's windows are full: blocked until a slot frees
                capacity = min(capacity, room)
            if capacity <= 0:
                continue
            if limits.tenant:
                # the tenant's other accounts share what is left (one worker, one cycle)
                tenant_room[key[0]] -= capacity
            suspended = json.loads(row["suspended_batches"] or "[]")
            plan.append((key[0], key[1], capacity, suspended))
        lease = settings.lease_seconds
        # Priority-0 messages of rate-limited accounts are left to the account's own claim
        # (priority first, within the room the pre-check found): the immediate pass would
        # take them all, and those beyond the room would be deferred with an event, again
        # every window (delivery.md §6.3: waiting for a slot produces no events).
        calls = [("claim_immediate", {"me": self.owner, "now": t, "lease": lease,
                                      "n": settings.immediate_batch_size,
                                      "limited": limited})]
        calls += [("claim_account", {"me": self.owner, "now": t, "lease": lease,
                                     "tenant_id": tenant_id, "account_id": account_id, "n": n,
                                     "suspended": suspended})
                  for tenant_id, account_id, n, suspended in plan]
        found = await store.apply_fetches(calls)  # one transaction, one commit
        # A full immediate pass may have left priority-0 messages behind: claim again at
        # once. Accounts were claimed up to their capacity; they ask for more themselves
        # (a wake-up at low water, see _low_water).
        self._more_ready = len(found[0]) >= settings.immediate_batch_size
        claimed_at = time.time()
        pks: dict[tuple[str, str], int] = {}
        for key in {(r["tenant_id"], r["account_id"]) for rows in found for r in rows}:
            # An immediate message enqueued after the account list was read has an account
            # the loop above did not check (maybe changed a moment ago): read it now.
            config = (self.configs.cached(key) if key in checked
                      else await self.configs.get(*key, fresh=True))
            if config is not None:
                pks[key] = config.account_pk
        return [Claimed.from_row(r, claimed_at, pks.get((r["tenant_id"], r["account_id"])))
                for rows in found for r in rows]

    async def _tight(self, key: tuple[str, str], limits: ratelimit.Limits, t: int) -> bool:
        """Whether the account's windows leave less room than one immediate pass could
        claim for it: only then are its priority-0 messages left to its own claim (see
        _claim). A generous limit (100,000 a day) kept every priority-0 message of the
        account waiting behind half a batch of lower ones (scheduling hunt: 4.3 s against
        0.2 s without the limit). The room is read at most once a second per account."""
        cached = self._room.get(key)
        if cached is None or cached[0] != t or cached[2] != limits:
            left, _ = await ratelimit.remaining(self.core.store, key[0], key[1], limits, t)
            self._room[key] = cached = (t, left, limits)
        left = cached[1]
        if left is None:
            return False
        lane = self.lanes.get(key)
        return left - (lane.held if lane else 0) < self.core.settings.immediate_batch_size

    async def _tenant_room(self, key: tuple[str, str], limits: ratelimit.Limits, t: int,
                           rooms: dict[str, int]) -> int | None:
        """Slots the tenant's windows leave for this cycle's claims, or None (and the account
        blocked) when they are full. Read once per tenant and cycle, less what this worker
        already holds for the tenant: every account of the tenant shares it, so a tenant
        limit over several accounts never claims more than it can send (delivery.md §6.3:
        no ``rate_limit`` events from a single worker)."""
        tenant_id = key[0]
        if tenant_id not in rooms:
            left, free_at = await ratelimit.remaining(
                self.core.store, tenant_id, key[1],
                ratelimit.Limits(account=(), tenant=limits.tenant), t)
            if left is not None and left <= 0:
                self._rate_blocked[key] = (free_at or t + 1, limits)
                return None
            held = sum(lane.held for k, lane in self.lanes.items() if k[0] == tenant_id)
            rooms[tenant_id] = (left or 0) - held
        return rooms[tenant_id]

    # lanes -------------------------------------------------------------------------------
    def _enqueue(self, msg: Claimed) -> None:
        key = (msg.tenant_id, msg.account_id)
        lane = self.lanes.setdefault(key, Lane(key))
        if msg.pk in lane.pks:
            return  # held already: the copy this worker has is sent once
        lane.pks.add(msg.pk)
        heapq.heappush(lane.heap, (msg.order, msg))
        self._spawn(lane)

    def _holding(self) -> set[int]:
        return set().union(*(lane.pks for lane in self.lanes.values()))

    def _spawn(self, lane: Lane) -> None:
        config = self.configs.cached(lane.key)
        limit = 3
        if config is not None and config.target is not None:
            limit = 1 if config.throttle_level > 0 else config.target.max_connections
        # Send tasks never outnumber the account's connections (delivery.md §3).
        for _ in range(min(limit - lane.running, len(lane.heap))):
            task = asyncio.create_task(self._work(lane))
            lane.tasks.add(task)
            task.add_done_callback(lane.tasks.discard)

    async def _work(self, lane: Lane) -> None:
        """One of the account's send loops: at most ``max_connections`` run per account.

        A loop moves on to the next message as soon as the SMTP transaction of the current
        one is over; recording the outcome (a commit) finishes in the background, still
        holding its worker send slot, so connections never sit idle during an fsync.
        """
        while lane.heap and not self._stopping:
            _, msg = heapq.heappop(lane.heap)
            lane.in_flight += 1
            await self._slots.acquire()
            if self._stopping:
                try:
                    await self.recorder.released(msg)
                finally:
                    self._finished(lane, msg)
                continue
            # a bare future, not an asyncio.Event: one per message, and the Event's
            # pure-Python wait showed in profiles of the send loop
            transmitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._send_one(lane, msg, transmitted))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            await transmitted
        if not lane.tasks - {asyncio.current_task()}:
            self._forget_if_idle(lane)

    async def _send_one(self, lane: Lane, msg: Claimed,
                        transmitted: asyncio.Future[None]) -> None:
        def release() -> None:
            if not transmitted.done():
                transmitted.set_result(None)

        try:
            await self.sender.send(msg, transmitted=release)
        finally:
            release()
            self._finished(lane, msg)

    def _forget_if_idle(self, lane: Lane) -> None:
        # A lane stays while a send of it is in flight: `held` (lease renewal, drain, tests)
        # counts it until its outcome is recorded.
        if not lane.heap and not lane.in_flight and self.lanes.get(lane.key) is lane:
            del self.lanes[lane.key]

    def _finished(self, lane: Lane, msg: Claimed) -> None:
        self._slots.release()
        lane.in_flight -= 1
        lane.pks.discard(msg.pk)
        if not lane.tasks:
            self._forget_if_idle(lane)
        # The send may have deferred its message (a retry) earlier than the remembered
        # next due time: read it again at the next cycle.
        self._next_due = None
        if self._low_water(lane):
            if self._in_cycle:
                self._freed.add(lane.key)  # the running claim may already refill it
            else:
                self._wake.set()  # capacity freed: claim more

    def _low_water(self, lane: Lane) -> bool:
        """Half the account's batch or less is waiting: claim for it (and wake for it).

        Claiming whenever a slot freed made each delivered message cost a claim transaction
        (one fsync) for a single replacement row, competing with the outcome writes for the
        one writer (docs/decisions/delivery.md, "Claim cadence").
        """
        config = self.configs.cached(lane.key)
        if config is None:
            return True
        return lane.waiting <= config.batch_size // 2

    async def _renew_loop(self) -> None:
        last = time.monotonic()
        granted = self.core.settings.lease_seconds  # the length the held leases last got
        while True:
            # Re-read at least every second and pace by the shorter of the lease in force
            # and the setting: lowered (3600 -> 30), a sleep of the old quarter let the
            # new, shorter leases expire under sends still running; raised (30 -> 3600), a
            # sleep of the new quarter let the 30 s leases already granted expire. Either
            # way their messages were recovered and sent twice.
            lease = self.core.settings.lease_seconds
            wait = last + min(lease, granted) / 4 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            last = time.monotonic()
            if self.held:
                try:
                    await self.leases.renew(lease)
                except Exception as exc:  # the next renewal retries; leases outlast 3 misses
                    log.error("lease renewal failed: %s", exc)
                    continue  # the held leases still have the length they had
            granted = lease  # renewed, or nothing held: new claims get the setting

    # shutdown ----------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Stop claiming, give back unstarted messages, wait for in-flight sends."""
        self._stopping = True
        self._wake.set()
        waiting = [msg for lane in self.lanes.values() for _, msg in lane.heap]
        for lane in self.lanes.values():
            lane.pks.difference_update(msg.pk for _, msg in lane.heap)
            lane.heap.clear()
        if waiting:
            log.info("drain: giving back %d messages not yet started", len(waiting))
            try:
                async with self.core.store.transaction() as tx:
                    await tx.execute("release_all_mine", me=self.owner, now=now(),
                                     pks=[m.pk for m in waiting])
            except StoreUnavailable as exc:
                # The sends in flight still get their time; these come back when their
                # leases expire (T14), as after a crash.
                log.error("drain: cannot give back %d messages (%s); they return to the "
                          "queue when their leases expire", len(waiting), exc)
        tasks = [t for lane in self.lanes.values() for t in lane.tasks] + list(self._sending)
        if tasks:
            # a send loop waits on its send's task: count the sends, not both
            log.info("drain: waiting up to %.0f s for %d sends in progress", timeout,
                     len(self._sending))
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                cut = sum(1 for task in pending if task in self._sending)
                log.warning("drain: %d sends cut off; their leases will expire and they will "
                            "be retried", cut)
                await asyncio.gather(*pending, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
        log.info("drain: dispatcher stopped")
