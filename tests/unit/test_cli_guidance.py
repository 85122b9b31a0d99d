"""The operator commands' errors say what to do: each names the option, variable or setting."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pushreachd import cli
from pushreachd.store.instance_lock import InstanceLock, InstanceLocked

from tests.unit.test_tpns import TPNS_SAMPLE


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in cli.CHATTY_LIBRARIES}
    root = logging.getLogger().level
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root)


@pytest.mark.usefixtures("restore_loggers")
@pytest.mark.parametrize(("log_level", "library_level"), [("INFO", logging.WARNING), ("WARNING", logging.WARNING),
                                                          ("ERROR", logging.ERROR), ("DEBUG", logging.DEBUG)])
def test_library_loggers_stay_at_warning_unless_debug(log_level: str, library_level: int) -> None:
    cli._setup_logging(log_level)
    for name in ("httpx", "httpcore", "aiohttp.access"):
        assert logging.getLogger(name).getEffectiveLevel() == library_level, name
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO) is (log_level == "DEBUG")
    assert logging.getLogger("pushreachd.engine.scheduler").getEffectiveLevel() <= logging.getLevelName(log_level)


# -- the instance lock ----------------------------------------------------------------------


def test_a_second_instance_lock_on_one_database_names_the_first(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    first = InstanceLock(db, "pushreach serve on 127.0.0.1:50051")
    first.acquire()
    try:
        with pytest.raises(InstanceLocked) as caught:
            InstanceLock(db, "pushreach serve on 127.0.0.1:50052").acquire()
        message = str(caught.value)
        assert f"database {db} is in use by pushreach serve on 127.0.0.1:50051 (pid {os.getpid()}" in message
        assert "another --db" in message and "PostgreSQL" in message
    finally:
        first.release()
    second = InstanceLock(db, "pushreach serve on 127.0.0.1:50052")
    second.acquire()  # released: free again, the file left behind does not block
    assert second.held
    second.release()


@pytest.mark.usefixtures("no_tencent_key")
def test_rotate_master_key_refuses_while_a_service_holds_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "p.db")
    assert cli.main(["apps", "create", "demo", "--db", db]) == 0
    serving = InstanceLock(db, "pushreach serve on 127.0.0.1:50051")
    serving.acquire()
    try:
        new_key = tmp_path / "new.key"
        assert cli.main(["apps", "rotate-master-key", "--db", db, "--new-key-file", str(new_key)]) == 2
        err = capsys.readouterr().err
        assert "stop the service first" in err and "pushreach serve on 127.0.0.1:50051" in err
        assert not new_key.exists()
    finally:
        serving.release()
    assert cli.main(["apps", "rotate-master-key", "--db", db, "--new-key-file", str(tmp_path / "new.key")]) == 0
    after = InstanceLock(db, "x")
    after.acquire()  # the command let it go
    after.release()


# -- apps commands on the database ---------------------------------------------------------


@pytest.fixture
def no_tencent_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUSHREACH_TENCENT_SECRET_KEY", raising=False)
    monkeypatch.delenv("PUSHREACH_MASTER_KEY", raising=False)


@pytest.mark.usefixtures("no_tencent_key")
@pytest.mark.parametrize(
    "command",
    [["list"], ["rotate-secret", "1234567890"], ["set-sms-credentials", "1234567890", "--secret-id", "AKID", "--secret-key", "k"],
     ["rotate-master-key", "--new-key-file", "NEW"]],
)
def test_commands_on_existing_apps_refuse_a_database_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    db = tmp_path / "nope.db"
    argv = ["apps", *[str(tmp_path / "new.key") if a == "NEW" else a for a in command], "--db", str(db)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--db {db}: no such database" in err and "PUSHREACH_DB" in err and "apps create" in err
    assert list(tmp_path.iterdir()) == []  # neither a database nor a key was created


@pytest.mark.usefixtures("no_tencent_key")
def test_apps_create_in_a_missing_directory_names_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x" / "y.db"
    assert cli.main(["apps", "create", "demo", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert f"directory {db.parent} does not exist" in err and "--db" in err and ".key" not in err


@pytest.mark.usefixtures("no_tencent_key")
def test_set_sms_credentials_without_the_secret_names_the_option_and_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "p.db")
    assert cli.main(["apps", "create", "demo", "--db", db, "--json"]) == 0
    access_id = json.loads(capsys.readouterr().out)["access_id"]
    assert cli.main(["apps", "set-sms-credentials", access_id, "--secret-id", "AKID", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "--secret-key" in err and "PUSHREACH_TENCENT_SECRET_KEY" in err
    assert cli.main(["apps", "list", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sms_credentials_set"] is False


# -- pushreach push ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [TPNS_SAMPLE, {"audience_type": "token", "token_list": ["t"]}, {"audience_type": "AUDIENCE_TYPE_TOKEN", "seq": 1},
     {"message_type": "notify"}, {"resend_by_sms": True, "sms_info": {"trigger_condition": 0, "sms_app": 1}}],
)
def test_a_tpns_body_without_tpns_says_to_use_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, object]
) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    assert cli.main(["push", str(path), "--access-id", "1", "--secret-key", "s"]) == 2
    err = capsys.readouterr().err
    assert "this looks like a TPNS body" in err and "use --tpns" in err


def test_a_broken_pushreach_body_is_not_called_tpns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"audience_type": "AUDIENCE_TYPE_TOKEN", "token_lst": ["t"]}))
    assert cli.main(["push", str(path), "--access-id", "1", "--secret-key", "s"]) == 2
    err = capsys.readouterr().err
    assert "token_lst" in err and "--tpns" not in err
