"""qccl for torchft: a reconfigurable process group for torchft's Manager, importable only
where torchft is installed.

    from qccl.torchft import ProcessGroupQCCL
    manager = torchft.Manager(pg=ProcessGroupQCCL(timeout=timedelta(seconds=10),
                                                  options=qccl.Options(codec="int8")), ...)

torchft syncs replica groups over its process group, usually across the slowest network
of the job: where qccl's compression pays most. torchft calls configure() on every quorum
change; each call builds a fresh qccl group on the store torchft gives (keys under a
prefix of that creation's own, so the previous quorum's never interfere).
"""

from datetime import timedelta

from torchft.process_group import ProcessGroupWrapper

from .factory import create_process_group


class ProcessGroupQCCL(ProcessGroupWrapper):
    def __init__(self, timeout: timedelta = timedelta(seconds=60), options=None) -> None:
        super().__init__(timeout)
        self._options = options  # a qccl.Options, or None: the environment's settings
        self._errored = None

    def _create_pg(self, store, rank: int, world_size: int):
        self._errored = None
        return create_process_group(store, rank, world_size, timeout=self._timeout, options=self._options)

    def _wrap_work(self, work, opts):
        """Records the first asynchronous failure for errored(), as torchft's NCCL group does."""

        def record(future):
            try:
                future.value()
            except Exception as error:  # noqa: BLE001 - any failure means: reconfigure
                if self._errored is None:
                    self._errored = error

        work.get_future().add_done_callback(record)
        return work

    def abort(self, errored: bool = True) -> None:
        """Fails every pending call of the group at once (safe from any thread)."""
        if errored and self._errored is None:
            self._errored = RuntimeError("qccl: the torchft process group was aborted")
        super().abort(errored=errored)

    def errored(self):
        """The first error a call of this quorum's group raised, or None."""
        return self._errored

    def getBackendName(self) -> str:
        return "torchft-qccl"
