"""The project's exceptions.

Lower layers raise these and know nothing of FUSE or botocore; ``fs.py`` turns
them into errno in one table.
"""


class GlacierFSError(Exception):
    """Base of every error glacierfs raises on purpose."""


class NotFound(GlacierFSError):
    """A vault, archive, job, upload or path does not exist."""


class AlreadyExists(GlacierFSError):
    """The name is taken."""


class NotEmpty(GlacierFSError):
    """A vault or directory still holds something."""


class InvalidRequest(GlacierFSError):
    """The service (or glacierfs) refused the parameters of a request."""


class InvalidName(InvalidRequest):
    """A vault or file name breaks one of the service's naming rules."""


class NameTooLong(InvalidRequest):
    """A path does not fit the 1,024-character archive description."""


class BadEncoding(InvalidName):
    """A name that is not valid UTF-8: descriptions and the catalog hold text."""


class ChecksumMismatch(GlacierFSError):
    """Bytes did not match the tree hash they should have."""


class JobNotReady(GlacierFSError):
    """A job's output was asked for before the job completed."""


class ServiceUnavailable(GlacierFSError):
    """The endpoint could not be reached or kept failing after botocore's retries."""


class Unreachable(ServiceUnavailable):
    """No answer at all (connection refused, timed out, cut): the endpoint is
    lost, which glacier.Reachability logs once rather than each call."""


class AccessDenied(GlacierFSError):
    """Credentials are missing, wrong, or not allowed to do this."""


class ArchiveLocked(AccessDenied):
    """The vault lock's policy keeps this archive: it cannot be deleted yet, or ever."""


class LimitExceeded(GlacierFSError):
    """A service limit (vault count, parts, size) was reached."""


class TooManyTags(LimitExceeded):
    """A vault holds the most tags Glacier allows (50)."""


class FileTooLarge(LimitExceeded):
    """A file outgrew what its part size allows (10,000 parts)."""


class NotSequential(GlacierFSError):
    """A write landed behind data that was already sent."""


class ReadOnly(GlacierFSError):
    """A stored archive was opened for writing without truncation: archives are immutable."""


class CrossVault(GlacierFSError):
    """A rename between two vaults, which would need a download and an upload."""


class NotSupported(GlacierFSError):
    """An operation Glacier cannot express (links, device files, ...)."""


class IsADirectory(GlacierFSError):
    """A file operation on a directory."""


class NotADirectory(GlacierFSError):
    """A directory operation on a file, or a path through a file."""


class Busy(GlacierFSError):
    """The file is being uploaded right now."""


class NoAttribute(GlacierFSError):
    """A known extended attribute this entry does not have (yet)."""


class UnknownAttribute(GlacierFSError):
    """An extended attribute glacierfs never holds."""


class RetrievalBudgetExceeded(GlacierFSError):
    """Starting another retrieval would pass the mount's cost guard."""


class RetrievalPolicyRefused(GlacierFSError):
    """The account's data retrieval policy (set in Glacier, not by glacierfs) refused a job."""


class InsufficientCapacity(GlacierFSError):
    """Glacier has no Expedited capacity for a job right now (and no provisioned unit covers it).
    Not an outage: other tiers, and other calls, still work."""


class RetrievalFailed(GlacierFSError):
    """Glacier failed the job, or its output could not be verified."""


class NoSpace(GlacierFSError):
    """A local disk glacierfs writes to (state or cache directory) is full."""


class CacheFull(NoSpace):
    """The cache directory's disk is full: retrieved bytes have nowhere to go."""
