"""The backup step end to end: real pg_dump/pg_restore and PostgreSQL, moto for S3 and RDS."""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from datetime import UTC, datetime, timedelta, timezone

import boto3
import psycopg
import pytest

from bot.backup.evidence import BackupEvidence, LocalTarget, S3Target, backup_name
from bot.backup.pg_dump import take_pg_dump_backup
from bot.backup.rds import take_rds_snapshot_backup
from bot.errors import BackupError
from bot.integrations.aws import Aws
from tests.prisma_db import seed

NOW = datetime(2026, 11, 24, 9, 30, 5, tzinfo=UTC)

def verify_databases(admin_url: str) -> list[str]:
    """Names of scratch verification databases still on the server."""
    with psycopg.connect(admin_url) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_verify\\_%'")]


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def prisma_db(scratch_db: str) -> str:
    """A scratch database with 3 applied Prisma migrations and two tables with rows."""
    seed(scratch_db, migrations=3)
    return scratch_db


@pytest.fixture
def aws(moto_reset: str) -> Aws:
    return Aws(region="us-east-1", endpoint_url=moto_reset, poll_interval_s=0.05, max_wait_s=2, call_timeout_s=10)


def make_bucket(aws: Aws, name: str, versioned: bool) -> object:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws.endpoint_url)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


class TestBackupName:
    def test_utc_timestamp(self):
        """The name carries the run id and the UTC time, whatever zone `now` is in."""
        local = NOW.astimezone(timezone(timedelta(hours=-5)))
        assert backup_name("prod-261124-a1b2c3", local) == "pre-migration-prod-261124-a1b2c3-20261124-093005"


class TestLocalPgDump:
    def test_dump_is_verified_by_restore(self, prisma_db, pg_admin_url, tmp_path):
        """A custom dump to a directory matches the live counts, its sha256 is the file's, and no scratch DB remains."""
        messages: list[str] = []
        evidence = take_pg_dump_backup(
            run_id="r1", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None, now=NOW,
            on_progress=messages.append,
        )
        dump = tmp_path / "pre-migration-r1-20261124-093005.dump"
        assert evidence.identifier == str(dump) and evidence.location == str(dump)
        assert evidence.verified and not evidence.reused
        assert evidence.live_prisma_migrations == evidence.restored_prisma_migrations == 3
        assert evidence.live_table_count == evidence.restored_table_count == 3
        assert evidence.sha256 == sha256_of(dump) and evidence.size_bytes == dump.stat().st_size
        assert evidence.toc_entries and evidence.toc_entries > 5
        assert verify_databases(pg_admin_url) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == [dump.name, dump.name + ".json"]
        assert any("throwaway PostgreSQL" in m for m in messages)  # never a scratch database on the live server

    def test_directory_format_with_two_jobs(self, prisma_db, pg_admin_url, tmp_path):
        """A -Fd -j 2 dump is packed into one uncompressed tar and verified."""
        evidence = take_pg_dump_backup(
            run_id="r2", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None, fmt="directory", jobs=2,
            now=NOW,
        )
        packed = tmp_path / "pre-migration-r2-20261124-093005.tar"
        assert evidence.verified and evidence.restored_prisma_migrations == 3
        assert evidence.sha256 == sha256_of(packed)
        with tarfile.open(packed, "r:") as tar:
            names = tar.getnames()
        assert "pre-migration-r2-20261124-093005/toc.dat" in names
        assert verify_databases(pg_admin_url) == []

    def test_second_call_reuses_the_dump(self, prisma_db, tmp_path):
        """Running the step twice for one run leaves one dump; the second call re-checks and reuses it."""
        first = take_pg_dump_backup(run_id="r3", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None, now=NOW)
        second = take_pg_dump_backup(
            run_id="r3", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None,
            now=NOW + timedelta(minutes=5),
        )
        assert second.reused and second.verified
        assert second.identifier == first.identifier and second.sha256 == first.sha256
        assert len(list(tmp_path.glob("pre-migration-r3-*.dump"))) == 1
        assert "reused" in second.describe()

    def test_each_phase_is_timed_for_planning_the_window(self, prisma_db, tmp_path):
        """The evidence says how long the dump, its checks and the test restore took, in that order."""
        evidence = take_pg_dump_backup(run_id="r20", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None,
                                       now=NOW, fmt="directory", jobs=2)
        assert list(evidence.phases) == ["dump", "checks", "verify"] and all(s > 0 for s in evidence.phases.values())
        assert sum(evidence.phases.values()) <= evidence.took_s
        line = evidence.describe()
        assert "restore-verified — dump " in line and " · checks " in line and " · verify " in line

    def test_reuse_adds_the_missing_test_restore(self, prisma_db, pg_admin_url, tmp_path):
        """A dump taken without a test restore gets one when reused with verify_restore on."""
        target = LocalTarget(tmp_path)
        first = take_pg_dump_backup(run_id="r10", database_url=prisma_db, target=target, aws=None, now=NOW,
                                    verify_restore=False)
        assert first.verified and first.restored_prisma_migrations is None
        second = take_pg_dump_backup(run_id="r10", database_url=prisma_db, target=target, aws=None)
        assert second.reused and second.verified and second.restored_prisma_migrations == 3
        assert "restore-verified, reused — took " in second.describe()
        assert verify_databases(pg_admin_url) == []

    def test_tampered_dump_is_refused(self, prisma_db, tmp_path):
        """A reused dump whose bytes changed since it was recorded is a BackupError."""
        evidence = take_pg_dump_backup(run_id="r4", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None, now=NOW)
        with open(evidence.identifier, "ab") as handle:
            handle.write(b"x")
        with pytest.raises(BackupError, match="does not match its recorded sha256"):
            take_pg_dump_backup(run_id="r4", database_url=prisma_db, target=LocalTarget(tmp_path), aws=None)

    def test_restore_mismatch_is_not_verified(self, scratch_db, pg_admin_url, tmp_path):
        """A dump whose restore fails (a CHECK that rejects the restored rows) is evidence with verified False."""
        seed(scratch_db, migrations=1)
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            # The CHECK's function is changed after the row went in: restoring that row into an empty table fails.
            conn.execute("CREATE FUNCTION ok(x int) RETURNS boolean LANGUAGE sql AS 'SELECT x > 0'")
            conn.execute("CREATE TABLE guarded (x int CHECK (ok(x)))")
            conn.execute("INSERT INTO guarded VALUES (1)")
            conn.execute("CREATE OR REPLACE FUNCTION ok(x int) RETURNS boolean LANGUAGE sql AS 'SELECT x > 0 AND x IN (SELECT x FROM public.guarded)'")
        evidence = take_pg_dump_backup(run_id="r5", database_url=scratch_db, target=LocalTarget(tmp_path), aws=None, now=NOW)
        assert not evidence.verified
        assert any("restore verification failed" in note and 'violates check constraint "guarded_x_check"' in note
                   for note in evidence.notes)
        assert "NOT verified" in evidence.describe()
        assert verify_databases(pg_admin_url) == []


class TestS3PgDump:
    def test_upload_to_versioned_bucket(self, prisma_db, aws):
        """The verified dump lands under the backup name with a version id and its sha256 as metadata."""
        s3 = make_bucket(aws, "backups", versioned=True)
        evidence = take_pg_dump_backup(
            run_id="r6", database_url=prisma_db, target=S3Target("backups", "migrations/"), aws=aws, now=NOW,
        )
        key = "migrations/pre-migration-r6-20261124-093005.dump"
        assert evidence.identifier == key and evidence.verified
        head = s3.head_object(Bucket="backups", Key=key, VersionId=evidence.s3_version_id)
        assert head["VersionId"] == evidence.s3_version_id
        assert head["ContentLength"] == evidence.size_bytes
        assert head["Metadata"]["sha256"] == evidence.sha256
        assert evidence.location == f"s3://backups/{key}?versionId={evidence.s3_version_id}"

    def test_unversioned_bucket_is_refused_before_dumping(self, prisma_db, aws, tmp_path, monkeypatch):
        """An unversioned bucket stops the step before pg_dump runs: no object, no dump file."""
        s3 = make_bucket(aws, "plain", versioned=False)
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        monkeypatch.setattr(tempfile, "tempdir", None)
        with pytest.raises(BackupError, match="versioning"):
            take_pg_dump_backup(run_id="r7", database_url=prisma_db, target=S3Target("plain"), aws=aws, now=NOW)
        assert s3.list_objects_v2(Bucket="plain").get("KeyCount", 0) == 0
        assert list(tmp_path.iterdir()) == []

    def test_second_call_reuses_the_object(self, prisma_db, aws):
        """Running the step twice for one run leaves one object version; the second call reuses it."""
        s3 = make_bucket(aws, "backups", versioned=True)
        target = S3Target("backups", "migrations")
        first = take_pg_dump_backup(run_id="r8", database_url=prisma_db, target=target, aws=aws, fmt="directory", jobs=2, now=NOW)
        second = take_pg_dump_backup(run_id="r8", database_url=prisma_db, target=target, aws=aws, fmt="directory", jobs=2)
        assert first.verified and second.verified and second.reused
        assert second.s3_version_id == first.s3_version_id and second.sha256 == first.sha256
        versions = s3.list_object_versions(Bucket="backups", Prefix="migrations/").get("Versions", [])
        assert [v["Key"] for v in versions] == ["migrations/pre-migration-r8-20261124-093005.tar"]

    def test_other_runs_are_not_reused(self, prisma_db, aws):
        """Run r9's backup is not mistaken for run r9-b's (same prefix); without a test restore the TOC is the check."""
        make_bucket(aws, "backups", versioned=True)
        take_pg_dump_backup(run_id="r9-b", database_url=prisma_db, target=S3Target("backups"), aws=aws, now=NOW,
                            verify_restore=False)
        evidence = take_pg_dump_backup(run_id="r9", database_url=prisma_db, target=S3Target("backups"), aws=aws,
                                       now=NOW, verify_restore=False)
        assert not evidence.reused and evidence.identifier == "pre-migration-r9-20261124-093005.dump"
        assert evidence.verified and evidence.restored_table_count is None and evidence.toc_entries
        assert any("test restore skipped" in note for note in evidence.notes)
        assert "3 tables, TOC-verified (no test restore) — dump " in evidence.describe()


class TestRdsSnapshotBackup:
    @pytest.fixture
    def instance(self, aws: Aws) -> str:
        boto3.client("rds", region_name="us-east-1", endpoint_url=aws.endpoint_url).create_db_instance(
            DBInstanceIdentifier="prod-db", Engine="postgres", EngineVersion="16.3", DBInstanceClass="db.t3.micro",
            AllocatedStorage=20, MasterUsername="app", MasterUserPassword="password123",
        )
        return "prod-db"

    def test_snapshot_is_taken_then_reused(self, aws, instance, prisma_db):
        """The snapshot exists in RDS, progress reaches 100, and a second call reuses it."""
        seen: list[int] = []
        first = take_rds_snapshot_backup(
            run_id="prod-261124-a1b2c3", aws=aws, instance_id=instance, database_url=prisma_db, now=NOW,
            on_progress=seen.append,
        )
        assert first.identifier == "pre-migration-prod-261124-a1b2c3-20261124-093005"
        assert first.verified and not first.reused and first.location == "rds:prod-db"
        assert first.live_prisma_migrations == 3 and 100 in seen
        again = take_rds_snapshot_backup(
            run_id="prod-261124-a1b2c3", aws=aws, instance_id=instance, database_url=None,
            now=NOW + timedelta(minutes=3), on_progress=seen.append,
        )
        assert again.reused and again.identifier == first.identifier
        rds = boto3.client("rds", region_name="us-east-1", endpoint_url=aws.endpoint_url)
        snapshots = rds.describe_db_snapshots(DBInstanceIdentifier=instance, SnapshotType="manual")["DBSnapshots"]
        assert [s["DBSnapshotIdentifier"] for s in snapshots] == [first.identifier]
        assert first.describe().startswith("RDS snapshot pre-migration-prod-261124-a1b2c3-20261124-093005, 3 migrations")

    def test_failed_snapshot_is_not_reused(self, aws, instance):
        """A failed snapshot from an earlier attempt is skipped and a new one is taken."""
        from moto.rds.models import rds_backends

        first = take_rds_snapshot_backup(run_id="r2", aws=aws, instance_id=instance, database_url=None, now=NOW)
        rds_backends["123456789012"]["us-east-1"].database_snapshots[first.identifier].status = "failed"
        again = take_rds_snapshot_backup(run_id="r2", aws=aws, instance_id=instance, database_url=None,
                                         now=NOW + timedelta(seconds=1))
        assert not again.reused and again.identifier == "pre-migration-r2-20261124-093006"

    def test_missing_instance(self, aws):
        """Snapshotting an instance that does not exist is a one-line BackupError naming it."""
        with pytest.raises(BackupError) as info:
            take_rds_snapshot_backup(run_id="r1", aws=aws, instance_id="prod-db", database_url=None, now=NOW)
        assert str(info.value).startswith("RDS create_db_snapshot failed: DBInstanceNotFound")
        assert "prod-db" in str(info.value)

    def test_run_ids_are_made_rds_safe(self, aws, instance):
        """A run id with an underscore still gives a valid snapshot identifier."""
        evidence = take_rds_snapshot_backup(run_id="stg_eu-261124-ff", aws=aws, instance_id=instance,
                                            database_url=None, now=NOW)
        assert evidence.identifier == "pre-migration-stg-eu-261124-ff-20261124-093005"


class TestEvidence:
    def test_summary_line(self):
        """The checklist line gives size, checksum, counts and the verdict."""
        evidence = BackupEvidence(
            method="pg_dump", identifier="k", location="s3://b/k", size_bytes=12_345_678, sha256="ab12" + "0" * 60,
            live_prisma_migrations=7, live_table_count=12, restored_prisma_migrations=7, restored_table_count=12,
            verified=True,
        )
        assert evidence.describe() == "pg_dump 12.3 MB, sha256 ab120000…, 7 migrations, 12 tables, restore-verified"
        assert evidence.to_dict()["sha256"].startswith("ab12")
