"""The apps the organization key may open. No read model lists apps, so each
partition's log is read for app creations once, then only from where the last
look stopped."""

from __future__ import annotations

import threading
from uuid import UUID

from eventsourcing.utils import get_topic

from idledger.api.runtime import Runtime
from idledger.domain.app import App, AppCreated

PAGE = 1000


class AppDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_up_to: dict[int, int] = {}  # per partition
        self._app_ids: list[UUID] = []

    def apps(self, runtime: Runtime) -> list[App]:
        """Every app, by name (then id), as the ledger has it now."""
        with self._lock:
            for partition in runtime.each_partition():
                self._catch_up(partition)
            app_ids = list(dict.fromkeys(self._app_ids))  # a moved app: in two logs
        apps = [runtime.app(app_id) for app_id in app_ids]
        return sorted(apps, key=lambda app: (app.name, str(app.id)))

    def _catch_up(self, runtime: Runtime) -> None:
        """Read a partition's app creations up to its head as it is now, and remember
        the head: the next look starts there, so each log is read once in all."""
        recorder = runtime.ledger.recorder
        head = recorder.max_notification_id() or 0
        topics = [get_topic(AppCreated)]
        read_up_to = self._read_up_to.get(runtime.partition, 0)
        while read_up_to < head:
            page = recorder.select_notifications(read_up_to + 1, PAGE, head, topics)
            self._app_ids += [UUID(str(notification.originator_id)) for notification in page]
            read_up_to = page[-1].id if len(page) == PAGE else head
        self._read_up_to[runtime.partition] = read_up_to
