"""The ledger handed to an auditor: a JSON Lines export, checked without ReviewFlow's database."""

import hashlib
import json
import threading
from datetime import date, datetime

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals import ledger, workflow
from approvals.models import LedgerEntry, LedgerExport

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(world, monkeypatch):
    """Three days of ledger: a post of alice's created and submitted on each of 1, 2 and 3 March
    2026, at noon, server time."""
    posts = []
    for day in (1, 2, 3):
        moment = timezone.make_aware(datetime(2026, 3, day, 12, 0))
        monkeypatch.setattr(timezone, "now", lambda moment=moment: moment)
        posts.append(
            workflow.create_post(
                world.alice,
                text=f"Journée n°{day} : épargne",
                account_ids=[world.lyon_sandbox.pk],
                submit=True,
            )
        )
    monkeypatch.undo()
    return posts


def entries(lines):
    return [json.loads(line) for line in lines[1:-1]]


def test_the_whole_ledger_is_exported_and_checked_without_the_database(
    history, django_assert_num_queries
):
    lines = list(ledger.export_lines())
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    header, end = json.loads(lines[0]), json.loads(lines[-1])
    assert header["format"] == ledger.EXPORT_FORMAT and "SHA-256" in header["hash_rule"]
    stored = list(LedgerEntry.objects.values_list("seq", "hash", "event"))
    assert [(e["seq"], e["hash"], e["event"]) for e in entries(lines)] == stored
    assert end == {"end": {"entries": len(stored), "last_hash": stored[-1][1]}}
    with django_assert_num_queries(0):
        assert ledger.verify_export(lines) == (None, len(stored))


def test_an_auditor_recomputes_every_hash_with_the_standard_library_alone(history):
    """What the header's hash_rule and the README tell an auditor, done as they would."""
    previous = "0" * 64
    for entry in entries(list(ledger.export_lines())):
        body = {name: entry[name] for name in ledger._ENTRY_FIELDS}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["prev_hash"] == previous
        assert hashlib.sha256((previous + text).encode()).hexdigest() == entry["hash"]
        previous = entry["hash"]


def _replace(lines, index, **changes):
    record = json.loads(lines[index])
    return [*lines[:index], json.dumps({**record, **changes}) + "\n", *lines[index + 1 :]]


def _forge(lines, index):
    """Alter entry `index` and give it the hash of what it now says, as a forger would."""
    record = json.loads(lines[index])
    record["payload"] = {**record["payload"], "text": "Rendement garanti"}
    fields = [record[name] for name in ledger._ENTRY_FIELDS]
    fields[1] = datetime.fromisoformat(fields[1])
    record["hash"] = ledger.entry_hash(record["prev_hash"], *fields)
    return [*lines[:index], json.dumps(record) + "\n", *lines[index + 1 :]]


@pytest.mark.parametrize(
    "tamper, problem",
    [
        (lambda f: _replace(f, 3, actor="bruno"), "content does not match its hash (altered)"),
        (lambda f: _forge(f, 3), "prev_hash does not match the previous entry's hash"),
        (lambda f: f[:3] + f[4:], "missing (next entry found is"),
        (lambda f: [f[0], f[2], f[1], *f[3:]], "out of order"),
        (lambda f: f[:-1], "the export is cut short: no end line"),
        (lambda f: f[:3] + f[-1:], "the end line does not match the entries read"),
        (lambda f: [*f, f[-1]], "text after the end line"),
        (lambda f: f[1:], "this is not a ReviewFlow ledger export"),
        (lambda f: _replace(f, 2, seq="two"), "not a ledger entry"),
        (lambda f: [*f[:2], "{not json\n", *f[2:]], "line 3: not a ledger entry"),
    ],
)
def test_a_changed_export_is_caught_and_named(history, tamper, problem):
    lines = list(ledger.export_lines())
    found, _ = ledger.verify_export(tamper(lines))
    assert found is not None and problem in found


def test_a_period_holds_the_days_asked_and_still_links(history):
    since, until = ledger.export_period(date(2026, 3, 2), date(2026, 3, 3))
    lines = list(ledger.export_lines(since=since, until=until))
    exported = entries(lines)
    assert [e["post_id"] for e in exported] == [history[1].pk] * 2 + [history[2].pk] * 2
    assert [e["created_at"][:10] for e in exported] == ["2026-03-02"] * 2 + ["2026-03-03"] * 2
    first = LedgerEntry.objects.get(seq=exported[0]["seq"])
    assert exported[0]["prev_hash"] == first.prev_hash  # links to the entry before the period
    assert ledger.verify_export(lines) == (None, 4)
    # A period has no gap: an entry taken out is missed, though each left hashes soundly.
    found, _ = ledger.verify_export(lines[:2] + lines[3:])
    assert (
        found == f"entry #{exported[1]['seq']}: missing (next entry found is #{exported[2]['seq']})"
    )


def test_one_posts_entries_are_each_checked(history):
    post = history[1]
    lines = list(ledger.export_lines(post_id=post.pk))
    exported = entries(lines)
    assert [e["event"] for e in exported] == ["post.created", "post.submitted"]
    assert ledger.verify_export(lines) == (None, 2)
    found, _ = ledger.verify_export(_replace(lines, 2, payload={"comment": "ok"}))
    assert "altered" in found


def test_the_commands_export_a_period_and_check_the_file(history, tmp_path, capsys):
    path = tmp_path / "ledger.jsonl"
    call_command("export_ledger", "--since", "2026-03-02", "--until", "2026-03-03", "-o", path)
    recorded = LedgerEntry.objects.order_by("seq").last()
    assert recorded.event == "ledger.exported" and recorded.actor == "system"
    assert recorded.payload["via"] == "manage.py export_ledger"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert {e["post_id"] for e in entries(lines)} == {history[1].pk, history[2].pk}
    call_command("verify_ledger", "--file", str(path))
    assert "Export sound: 4 entries verified." in capsys.readouterr().out
    path.write_text("".join(_replace(lines, 2, event="post.approved")), encoding="utf-8")
    with pytest.raises(CommandError, match=r"Export broken: entry #\d+: content does not match"):
        call_command("verify_ledger", "--file", str(path))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--since", "1 March"], "'1 March' is not a date: write it as YYYY-MM-DD."),
        (["--since", "2026-03-03", "--until", "2026-03-01"], "--until is before --since."),
        (["-o", "/nonexistent/dir/ledger.jsonl"], "Cannot write /nonexistent/dir/ledger.jsonl"),
    ],
)
def test_export_ledger_refuses_bad_arguments_and_records_nothing(world, arguments, message):
    before = LedgerEntry.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("export_ledger", *arguments)
    assert LedgerEntry.objects.count() == before


def test_verify_ledger_says_what_is_wrong_with_a_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("verify_ledger", "--file", str(tmp_path / "missing.jsonl"))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(CommandError, match="not a ReviewFlow ledger export"):
        call_command("verify_ledger", "--file", str(binary))


def ask_for_export(client, world, django_capture_on_commit_callbacks, **fields):
    """carla's request through the admin form; the worker's part runs on commit (Celery eager)."""
    client.force_login(world.carla)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:approvals_ledgerentry_export"), fields)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:approvals_ledgerexport_changelist")
    return LedgerExport.objects.get()


def test_a_compliance_admin_asks_for_an_export_then_downloads_it(
    client, world, history, media_root, django_capture_on_commit_callbacks
):
    client.force_login(world.carla)
    changelist = client.get(reverse("admin:approvals_ledgerentry_changelist"))
    url = reverse("admin:approvals_ledgerentry_export")
    assert url in changelist.content.decode()
    form = client.get(url).content.decode()
    assert "<h2>What to export (all empty: the whole ledger)</h2>" in form
    assert 'value="Prepare the export"' in form and 'type="date"' in form

    export = ask_for_export(client, world, django_capture_on_commit_callbacks, post=history[0].pk)
    asked = LedgerEntry.objects.get(event="ledger.exported")
    assert (asked.actor, asked.payload) == (
        "carla",
        {
            "via": "admin",
            "export": export.pk,
            "since": None,
            "until": None,
            "post_id": history[0].pk,
        },
    )
    assert (export.state, export.requested_by, export.entries) == ("ready", world.carla, 2)
    listing = client.get(reverse("admin:approvals_ledgerexport_changelist")).content.decode()
    download = reverse("admin:approvals_ledgerexport_download", args=[export.pk])
    assert f'<a href="{download}">Download</a>' in listing
    assert f"post {history[0].pk}" in listing
    assert 'http-equiv="refresh"' not in listing  # nothing left to wait for
    page = client.get(reverse("admin:approvals_ledgerexport_change", args=[export.pk]))
    assert download in page.content.decode() and export.sha256 in page.content.decode()
    assert "/media/" not in page.content.decode()  # the file is never served as is

    response = client.get(download)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith(
        f'attachment; filename="reviewflow-ledger-{export.pk}-'
    )
    data = b"".join(response.streaming_content)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (export.size, export.sha256)
    lines = data.decode().splitlines(keepends=True)
    assert ledger.verify_export(lines) == (None, 2)
    assert json.loads(lines[-1])["end"]["last_hash"] == export.last_hash
    taken = LedgerEntry.objects.order_by("seq").last()
    assert (taken.event, taken.actor) == ("ledger.export_downloaded", "carla")
    assert taken.payload == {"export": export.pk, "sha256": export.sha256}


def test_a_period_asked_in_the_admin_is_listed_by_its_days(
    client, world, history, media_root, django_capture_on_commit_callbacks
):
    export = ask_for_export(
        client,
        world,
        django_capture_on_commit_callbacks,
        first_day="2026-03-02",
        last_day="2026-03-02",
    )
    assert export.entries == 2  # 2 March's post: created and submitted
    listing = client.get(reverse("admin:approvals_ledgerexport_changelist")).content.decode()
    assert "from 2026-03-02 to 2026-03-02" in listing


def test_the_list_refreshes_itself_while_an_export_is_being_written(client, world, history):
    client.force_login(world.carla)
    client.post(reverse("admin:approvals_ledgerentry_export"), {})  # on commit: never, here
    assert LedgerExport.objects.get().state == "queued"
    listing = client.get(reverse("admin:approvals_ledgerexport_changelist")).content.decode()
    assert '<meta http-equiv="refresh" content="3">' in listing
    assert "is asked for: a worker writes it" in listing  # the message after the request


def test_the_export_form_refuses_a_backward_period_and_records_nothing(client, world, history):
    client.force_login(world.carla)
    before = LedgerEntry.objects.count()
    response = client.post(
        reverse("admin:approvals_ledgerentry_export"),
        {"first_day": "2026-03-03", "last_day": "2026-03-01"},
    )
    assert response.status_code == 400
    assert "The last day is before the first day." in response.content.decode()
    assert LedgerEntry.objects.count() == before


def test_only_people_who_may_read_the_ledger_export_it(client, world, django_user_model):
    url = reverse("admin:approvals_ledgerentry_export")
    client.force_login(world.alice)  # an advisor: not staff
    assert client.post(url).status_code == 302
    staff = django_user_model.objects.create_user("staff", "staff@example.com", "x", is_staff=True)
    client.force_login(staff)  # staff, without the ledger's view permission
    assert client.post(url).status_code == 403
    assert not LedgerEntry.objects.filter(event="ledger.exported").exists()
    assert not LedgerExport.objects.exists()


def test_only_people_who_may_read_the_ledger_download_an_export(
    client, world, history, media_root, django_user_model
):
    export = ledger.request_export(actor=world.carla)
    ledger.write_export(export.pk)
    download = reverse("admin:approvals_ledgerexport_download", args=[export.pk])
    client.force_login(world.alice)  # an advisor: not staff
    assert client.get(download).status_code == 302
    staff = django_user_model.objects.create_user("staff", "staff@example.com", "x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_ledgerexport"))
    client.force_login(staff)  # may see the list of exports, not read the ledger
    assert client.get(download).status_code == 403
    assert not LedgerEntry.objects.filter(event="ledger.export_downloaded").exists()


@pytest.mark.django_db(transaction=True)
def test_the_command_streams_outside_a_transaction(world, tmp_path, capsys):
    """As in production: no test transaction around it (on PostgreSQL a cursor WITH HOLD)."""
    for day in range(3):
        workflow.create_post(world.alice, text=f"Post {day}", account_ids=[world.lyon_sandbox.pk])
    path = tmp_path / "all.jsonl"
    call_command("export_ledger", "-o", str(path))
    call_command("verify_ledger", "--file", str(path))
    assert (
        f"Export sound: {LedgerEntry.objects.count()} entries verified." in capsys.readouterr().out
    )


# --- the worker's part --------------------------------------------------------------------------


def test_a_message_delivered_twice_writes_one_file(world, history, media_root):
    export = ledger.request_export(actor=world.carla)
    ledger.write_export(export.pk)
    ledger.write_export(export.pk)  # the broker delivers again: the export is ready, left as is
    export.refresh_from_db()
    assert (export.state, export.attempts) == ("ready", 1)
    assert [path.name for path in (media_root / "ledger-exports").iterdir()] == [
        export.file.name.rsplit("/", 1)[1]
    ]
    assert export.entries == LedgerEntry.objects.count()  # its own request's entry included


def test_an_export_whose_worker_stopped_is_written_again_then_given_up(world, history, media_root):
    export = ledger.request_export(actor=world.carla)
    LedgerExport.objects.filter(pk=export.pk).update(state="writing", attempts=1)  # killed
    ledger.write_export(export.pk)  # the message, redelivered
    export.refresh_from_db()
    assert (export.state, export.attempts) == ("ready", 2)

    stuck = ledger.request_export(actor=world.carla)
    LedgerExport.objects.filter(pk=stuck.pk).update(state="writing", attempts=3)
    ledger.write_export(stuck.pk)
    stuck.refresh_from_db()
    assert (stuck.state, stuck.file.name) == ("failed", "")
    assert "stopped 3 times: run `manage.py export_ledger`" in stuck.error


def test_an_export_that_cannot_be_written_says_why(world, history, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "not-a-folder"
    settings.MEDIA_ROOT.write_text("a file where the folder should be")
    export = ledger.request_export(actor=world.carla)
    with pytest.raises(OSError):
        ledger.write_export(export.pk)
    export.refresh_from_db()
    assert export.state == "failed" and export.file.name == ""
    assert export.error.startswith("The export could not be written: ")


@pytest.mark.django_db(transaction=True)
def test_an_export_deleted_while_written_leaves_no_file(world, media_root, monkeypatch):
    workflow.create_post(world.alice, text="Post", account_ids=[world.lyon_sandbox.pk])
    export = LedgerExport.objects.create(requested_by=world.carla)  # queued, its message sent
    lines = ledger.export_lines

    def delete():  # a compliance admin, in a web process, deletes it from the list
        LedgerExport.objects.filter(pk=export.pk).delete()
        connection.close()

    def deleted_meanwhile(**scope):
        for number, line in enumerate(lines(**scope)):
            if number == 1:  # the rows are streaming: this connection can run nothing else
                thread = threading.Thread(target=delete)
                thread.start()
                thread.join()
            yield line

    monkeypatch.setattr(ledger, "export_lines", deleted_meanwhile)
    ledger.write_export(export.pk)
    assert not LedgerExport.objects.exists()
    assert list((media_root / "ledger-exports").iterdir()) == []


def test_an_export_whose_message_was_lost_is_written_by_the_sweep(
    world, history, media_root, settings, monkeypatch, caplog
):
    from datetime import timedelta

    from kombu.exceptions import OperationalError

    from approvals.tasks import export_ledger, write_stalled_ledger_exports

    def unreachable(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(export_ledger, "apply_async", unreachable)
    lost = ledger.request_export(actor=world.carla)
    ledger._enqueue_export(lost.pk)  # what the request's commit runs: the broker is down
    assert "export_ledger" in caplog.text and "the sweep will do it" in caplog.text
    lost.refresh_from_db()
    assert lost.state == "queued"  # not failed: only delayed
    recent = ledger.request_export(actor=world.carla)  # its message may still be on its way
    LedgerExport.objects.filter(pk=lost.pk).update(
        requested_at=timezone.now() - ledger.EXPORT_STALLED_AFTER - timedelta(seconds=1)
    )
    write_stalled_ledger_exports()  # the beat's sweep
    lost.refresh_from_db()
    recent.refresh_from_db()
    assert (lost.state, recent.state) == ("ready", "queued")
    assert (media_root / lost.file.name).exists()


def test_an_export_left_being_written_past_its_lease_is_written_by_the_sweep(
    world, history, media_root
):
    from datetime import timedelta

    from approvals.tasks import write_stalled_ledger_exports

    now = timezone.now()
    abandoned = ledger.request_export(actor=world.carla)  # the database went away mid-write
    writing = ledger.request_export(actor=world.carla)  # a worker is on it
    LedgerExport.objects.filter(pk=abandoned.pk).update(
        state="writing", attempts=1, started_at=now - ledger.EXPORT_LEASE - timedelta(seconds=1)
    )
    LedgerExport.objects.filter(pk=writing.pk).update(state="writing", attempts=1, started_at=now)
    write_stalled_ledger_exports()
    abandoned.refresh_from_db()
    writing.refresh_from_db()
    assert (abandoned.state, abandoned.attempts, writing.state) == ("ready", 2, "writing")


def test_deleting_an_export_deletes_its_file(
    client, world, history, media_root, django_capture_on_commit_callbacks
):
    export = ask_for_export(client, world, django_capture_on_commit_callbacks)
    path = media_root / export.file.name
    assert path.exists()
    delete = reverse("admin:approvals_ledgerexport_delete", args=[export.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not LedgerExport.objects.exists() and not path.exists()
    assert LedgerEntry.objects.filter(event="ledger.exported").exists()  # the record stays
