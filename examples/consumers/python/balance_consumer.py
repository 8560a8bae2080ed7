#!/usr/bin/env python3
"""A downstream consumer of the ledger: per-account balances from the Kafka topic, exactly once.

It reads <prefix>.events, decodes each FlatBuffers envelope and folds the account_entry events
into a balance table in SQLite. Exactly once, as docs/consumers.md explains: one SQLite
transaction applies a batch of events, records each stream's last applied version and each
partition's next offset; on partition assignment the consumer seeks to the stored offsets.
A redelivered event (its version already applied) is skipped; a missing version stops the
consumer instead of skipping money.

Several instances may share one database file and one consumer group: a rebalance moves a
partition, and the stream versions in the database keep the new owner from applying what the
old one already did.

    flatc --python -o gen -I schemas schemas/events.fbs schemas/envelope.fbs   # once
    PYTHONPATH=gen python3 balance_consumer.py --brokers localhost:9092 --database balances.db \\
        [--kafka-property security.protocol=SASL_SSL ...]

Needs Debian's python3-confluent-kafka, python3-flatbuffers and python3-numpy.
"""
import argparse
import logging
import signal
import sqlite3
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException

from ledger.schema import AccountEntry, EntryDirection, EntryPhase, Envelope, Event, EventData

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS balances (
    account_id      TEXT PRIMARY KEY,
    debits_posted   INTEGER NOT NULL,
    credits_posted  INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stream_versions (stream_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kafka_offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
"""


class MissingVersion(Exception):
    """An event arrived whose stream lacks the version before it: never skip money."""


def checked(value):
    # SQLite turns an overflowing integer sum into a float: money must never become one.
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"balance {value} leaves int64")
    return value


def open_database(path):
    # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE below.
    database = sqlite3.connect(path, timeout=30, isolation_level=None)
    database.execute("PRAGMA journal_mode=WAL")
    database.executescript(SCHEMA)
    return database


def apply_entry(database, account_id, entry):
    row = database.execute(
        "SELECT debits_posted, credits_posted, debits_pending, credits_pending FROM balances "
        "WHERE account_id = ?", (account_id,)).fetchone()
    debits_posted, credits_posted, debits_pending, credits_pending = row or (0, 0, 0, 0)
    debit = entry.Direction() == EntryDirection.EntryDirection.Debit
    phase = entry.Phase()
    posted_change = pending_change = 0
    if phase == EntryPhase.EntryPhase.Posted:
        posted_change = entry.Amount()
    elif phase == EntryPhase.EntryPhase.Pending:
        pending_change = entry.Amount()
    elif phase == EntryPhase.EntryPhase.PendingPosted:  # `released` leaves pending, `amount` posts
        pending_change, posted_change = -entry.Released(), entry.Amount()
    elif phase == EntryPhase.EntryPhase.PendingReleased:
        pending_change = -entry.Amount()
    else:
        logging.warning("account %s: entry phase %d unknown to this consumer, ignored", account_id, phase)
    if debit:
        debits_posted, debits_pending = debits_posted + posted_change, debits_pending + pending_change
    else:
        credits_posted, credits_pending = credits_posted + posted_change, credits_pending + pending_change
    database.execute(
        "INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?, ?)",
        (account_id, checked(debits_posted), checked(credits_posted), checked(debits_pending),
         checked(credits_pending)))


def apply_message(database, message):
    """Applies one Kafka message inside the caller's transaction; False if it was a duplicate."""
    # The relay's per-partition progress markers carry this header and no event: skip them.
    if any(key == "ledger-progress" for key, _ in (message.headers() or [])):
        return False
    envelope = Envelope.Envelope.GetRootAs(message.value(), 0)
    stream_id = envelope.StreamId().decode()
    version = envelope.Version()
    row = database.execute("SELECT version FROM stream_versions WHERE stream_id = ?", (stream_id,)).fetchone()
    applied = row[0] if row else 0
    if version <= applied:
        return False  # delivered again: already in this database
    if version != applied + 1:
        raise MissingVersion(
            f"{stream_id}: version {version} arrived after {applied} (position {envelope.Position()}); "
            "fill the gap from `ledger replay export --stream` before going on")
    event = Event.Event.GetRootAs(envelope.PayloadAsNumpy().tobytes(), 0)
    # Every other type (and any type added after this code was written) only moves the version.
    if event.DataType() == EventData.EventData.AccountEntry and stream_id.startswith("account-"):
        entry = AccountEntry.AccountEntry()
        entry.Init(event.Data().Bytes, event.Data().Pos)
        apply_entry(database, stream_id[len("account-"):], entry)
    database.execute("INSERT OR REPLACE INTO stream_versions VALUES (?, ?)", (stream_id, version))
    return True


def apply_batch(database, messages):
    database.execute("BEGIN IMMEDIATE")
    try:
        applied = sum(apply_message(database, message) for message in messages)
        for message in messages:
            # max(): after a rebalance the previous owner's last batch may commit after ours.
            database.execute(
                "INSERT INTO kafka_offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                (message.topic(), message.partition(), message.offset() + 1))
        database.execute("COMMIT")
        return applied
    except BaseException:
        database.execute("ROLLBACK")
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="ledger.events")
    parser.add_argument("--group", default="example-balances-python", help="consumer group id")
    parser.add_argument("--database", required=True, help="SQLite file (shared by the group's instances)")
    parser.add_argument("--kafka-property", action="append", default=[], metavar="NAME=VALUE",
                        help="any librdkafka consumer property, e.g. security.protocol=SASL_SSL (repeatable)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s balance_consumer %(levelname)s %(message)s")

    database = open_database(arguments.database)
    settings = {
        "bootstrap.servers": arguments.brokers,
        "group.id": arguments.group,
        "enable.auto.commit": False,  # the offsets live in our database, with our writes
        "auto.offset.reset": "earliest",
    }
    for setting in arguments.kafka_property:
        name, _, value = setting.partition("=")
        settings[name] = value
    consumer = Consumer(settings)

    def on_assign(consumer, partitions):
        for partition in partitions:
            row = database.execute("SELECT next_offset FROM kafka_offsets WHERE topic = ? AND partition = ?",
                                   (partition.topic, partition.partition)).fetchone()
            partition.offset = row[0] if row else OFFSET_BEGINNING
        logging.info("assigned %s", [(p.partition, p.offset) for p in partitions])
        consumer.assign(partitions)  # with the offsets from our database

    def on_revoke(consumer, partitions):
        # A batch in flight still commits: the stream versions make that harmless.
        logging.info("revoked %s", [p.partition for p in partitions])

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    consumer.subscribe([arguments.topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not stopping:
            messages = consumer.consume(num_messages=500, timeout=0.5)
            batch = []
            for message in messages:
                if message.error():
                    raise KafkaException(message.error())
                batch.append(message)
            if batch:
                applied = apply_batch(database, batch)
                logging.debug("applied %d of %d messages", applied, len(batch))
    except MissingVersion as problem:
        logging.error("%s", problem)
        return 2
    finally:
        consumer.close()  # leaves the group at once, so a partner takes the partitions over
        database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
