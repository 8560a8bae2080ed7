#include "loan_codec.hpp"

#include "json_fields.hpp"

namespace ledger::domain::loan_codec {

namespace fb = ledger::schema;

namespace {

std::string str(const flatbuffers::String* value) { return value == nullptr ? std::string() : value->str(); }

std::optional<Date> date_of(const flatbuffers::String* value) { return parse_date(str(value)); }

void text(JsonWriter& w, const char* key, std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}
void number(JsonWriter& w, const char* key, std::int64_t value) {
  w.Key(key);
  w.Int64(value);
}

// The object's fields through `read`, then nothing else.
template <typename Read>
bool read_object(const rapidjson::Value& value, Read&& read) {
  if (!value.IsObject()) return false;
  FieldReader r(value);
  read(r);
  return r.complete();
}

// Allocation::total() without its overflow: stored or exported parts are not yet trusted, and
// parts near INT64_MAX must make the event invalid, not the sum undefined.
std::optional<std::int64_t> checked_total(const Allocation& a) {
  std::int64_t sum = 0;
  if (__builtin_add_overflow(a.penalties, a.interest, &sum) ||
      __builtin_add_overflow(sum, a.principal, &sum)) {
    return std::nullopt;
  }
  return sum;
}

}  // namespace

flatbuffers::Offset<fb::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanOriginated& e) {
  std::vector<flatbuffers::Offset<fb::LoanInstallment>> schedule;
  for (const auto& installment : e.schedule) {
    schedule.push_back(fb::CreateLoanInstallment(builder, installment.number,
                                                 builder.CreateString(to_string(installment.due_date)),
                                                 installment.principal, installment.interest));
  }
  const auto& t = e.terms;
  auto table = fb::CreateLoanOriginated(
      builder, builder.CreateString(e.loan_id), builder.CreateString(e.borrower), builder.CreateString(e.currency),
      t.principal, t.rate_bps, t.installments, static_cast<fb::ScheduleType>(t.type),
      builder.CreateString(to_string(t.origination_date)), builder.CreateString(to_string(t.first_due)),
      t.origination_fee, t.late_fee, t.grace_days, builder.CreateVector(schedule));
  return fb::CreateEvent(builder, fb::EventData::LoanOriginated, table.Union());
}

flatbuffers::Offset<fb::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanDisbursed& e) {
  auto table = fb::CreateLoanDisbursed(builder, builder.CreateString(e.transfer_id), e.disbursed.to_borrower,
                                       builder.CreateString(e.fee_transfer_id), e.disbursed.fee);
  return fb::CreateEvent(builder, fb::EventData::LoanDisbursed, table.Union());
}

flatbuffers::Offset<fb::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanRepaid& e) {
  const Allocation& a = e.allocation;
  std::vector<flatbuffers::Offset<fb::LoanAllocation>> parts;
  for (const auto& part : a.installments) {
    parts.push_back(fb::CreateLoanAllocation(builder, part.number, part.penalty, part.interest, part.principal,
                                             part.waive_interest));
  }
  auto table = fb::CreateLoanRepaid(builder, builder.CreateString(e.repayment_id), a.total(), a.penalties,
                                    a.interest, a.principal, a.interest_reversed, builder.CreateVector(parts));
  return fb::CreateEvent(builder, fb::EventData::LoanRepaid, table.Union());
}

flatbuffers::Offset<fb::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanDayClosed& e) {
  const DayClose& c = e.closed;
  std::vector<flatbuffers::Offset<fb::LoanLateFee>> fees;
  for (const auto& fee : c.late_fees) fees.push_back(fb::CreateLoanLateFee(builder, fee.number, fee.amount));
  auto table = fb::CreateLoanDayClosed(builder, builder.CreateString(to_string(c.date)), c.interest_accrued,
                                       builder.CreateVector(c.became_overdue), builder.CreateVector(fees),
                                       c.days_past_due);
  return fb::CreateEvent(builder, fb::EventData::LoanDayClosed, table.Union());
}

flatbuffers::Offset<fb::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanWrittenOff& e) {
  const WriteOff& w = e.written_off;
  auto table = fb::CreateLoanWrittenOff(builder, builder.CreateString(e.transfer_id), w.principal,
                                        w.interest_reversed, w.penalties_cancelled);
  return fb::CreateEvent(builder, fb::EventData::LoanWrittenOff, table.Union());
}

std::optional<DomainEvent> decode(const fb::Event& root) {
  switch (root.data_type()) {
    case fb::EventData::LoanOriginated: {
      const auto* e = root.data_as_LoanOriginated();
      events::LoanOriginated event{str(e->loan_id()), str(e->borrower()), str(e->currency()), {}, {}};
      LoanTerms& t = event.terms;
      t.principal = e->principal();
      t.rate_bps = e->rate_bps();
      t.installments = e->installments();
      if (!in_range(e->schedule_type())) return std::nullopt;
      t.type = static_cast<ScheduleType>(e->schedule_type());
      const auto origination = date_of(e->origination_date());
      const auto first_due = date_of(e->first_due_date());
      if (!origination || !first_due || e->schedule() == nullptr) return std::nullopt;
      t.origination_date = *origination;
      t.first_due = *first_due;
      t.origination_fee = e->origination_fee();
      t.late_fee = e->late_fee();
      t.grace_days = e->grace_days();
      for (const auto* installment : *e->schedule()) {
        const auto due = date_of(installment->due_date());
        if (!due) return std::nullopt;
        event.schedule.push_back({installment->number(), *due, installment->principal(), installment->interest()});
      }
      return event;
    }
    case fb::EventData::LoanDisbursed: {
      const auto* e = root.data_as_LoanDisbursed();
      return events::LoanDisbursed{str(e->transfer_id()), str(e->fee_transfer_id()), {e->amount(), e->fee()}};
    }
    case fb::EventData::LoanRepaid: {
      const auto* e = root.data_as_LoanRepaid();
      events::LoanRepaid event{str(e->repayment_id()), {}};
      Allocation& a = event.allocation;
      a.penalties = e->penalties();
      a.interest = e->interest();
      a.principal = e->principal();
      a.interest_reversed = e->interest_reversed();
      if (e->allocations() != nullptr) {
        for (const auto* part : *e->allocations()) {
          a.installments.push_back(
              {part->number(), part->penalty(), part->interest(), part->principal(), part->waive_interest()});
        }
      }
      if (checked_total(a) != e->amount()) return std::nullopt;
      return event;
    }
    case fb::EventData::LoanDayClosed: {
      const auto* e = root.data_as_LoanDayClosed();
      const auto day = date_of(e->date());
      if (!day) return std::nullopt;
      events::LoanDayClosed event{{*day, e->interest_accrued(), {}, {}, e->days_past_due()}};
      if (e->became_overdue() != nullptr) {
        event.closed.became_overdue.assign(e->became_overdue()->begin(), e->became_overdue()->end());
      }
      if (e->late_fees() != nullptr) {
        for (const auto* fee : *e->late_fees()) event.closed.late_fees.push_back({fee->number(), fee->amount()});
      }
      return event;
    }
    case fb::EventData::LoanWrittenOff: {
      const auto* e = root.data_as_LoanWrittenOff();
      return events::LoanWrittenOff{str(e->transfer_id()),
                                    {e->principal(), e->interest_reversed(), e->penalties_cancelled()}};
    }
    default: return std::nullopt;
  }
}

void write_json(JsonWriter& w, const events::LoanOriginated& e) {
  const LoanTerms& t = e.terms;
  text(w, "loan_id", e.loan_id);
  text(w, "borrower", e.borrower);
  text(w, "currency", e.currency);
  number(w, "principal", t.principal);
  number(w, "rate_bps", t.rate_bps);
  number(w, "installments", t.installments);
  text(w, "schedule_type", to_string(t.type));
  text(w, "origination_date", to_string(t.origination_date));
  text(w, "first_due_date", to_string(t.first_due));
  number(w, "origination_fee", t.origination_fee);
  number(w, "late_fee", t.late_fee);
  number(w, "grace_days", t.grace_days);
  w.Key("schedule");
  w.StartArray();
  for (const auto& installment : e.schedule) {
    w.StartObject();
    number(w, "number", installment.number);
    text(w, "due_date", to_string(installment.due_date));
    number(w, "principal", installment.principal);
    number(w, "interest", installment.interest);
    w.EndObject();
  }
  w.EndArray();
}

void write_json(JsonWriter& w, const events::LoanDisbursed& e) {
  text(w, "transfer_id", e.transfer_id);
  number(w, "amount", e.disbursed.to_borrower);
  text(w, "fee_transfer_id", e.fee_transfer_id);
  number(w, "fee", e.disbursed.fee);
}

void write_json(JsonWriter& w, const events::LoanRepaid& e) {
  const Allocation& a = e.allocation;
  text(w, "repayment_id", e.repayment_id);
  number(w, "amount", a.total());
  number(w, "penalties", a.penalties);
  number(w, "interest", a.interest);
  number(w, "principal", a.principal);
  number(w, "interest_reversed", a.interest_reversed);
  w.Key("allocations");
  w.StartArray();
  for (const auto& part : a.installments) {
    w.StartObject();
    number(w, "number", part.number);
    number(w, "penalty", part.penalty);
    number(w, "interest", part.interest);
    number(w, "principal", part.principal);
    w.Key("waive_interest");
    w.Bool(part.waive_interest);
    w.EndObject();
  }
  w.EndArray();
}

void write_json(JsonWriter& w, const events::LoanDayClosed& e) {
  const DayClose& c = e.closed;
  text(w, "date", to_string(c.date));
  number(w, "interest_accrued", c.interest_accrued);
  w.Key("became_overdue");
  w.StartArray();
  for (const auto number_overdue : c.became_overdue) w.Int(number_overdue);
  w.EndArray();
  w.Key("late_fees");
  w.StartArray();
  for (const auto& fee : c.late_fees) {
    w.StartObject();
    number(w, "number", fee.number);
    number(w, "amount", fee.amount);
    w.EndObject();
  }
  w.EndArray();
  number(w, "days_past_due", c.days_past_due);
}

void write_json(JsonWriter& w, const events::LoanWrittenOff& e) {
  text(w, "transfer_id", e.transfer_id);
  number(w, "principal", e.written_off.principal);
  number(w, "interest_reversed", e.written_off.interest_reversed);
  number(w, "penalties_cancelled", e.written_off.penalties_cancelled);
}

bool read_json(const rapidjson::Value& object, events::LoanOriginated& e) {
  return read_object(object, [&](FieldReader& r) {
    LoanTerms& t = e.terms;
    r.string("loan_id", e.loan_id);
    r.string("borrower", e.borrower);
    r.string("currency", e.currency);
    r.int64("principal", t.principal);
    r.int32("rate_bps", t.rate_bps);
    r.int32("installments", t.installments);
    std::string type;
    r.string("schedule_type", type);
    if (const auto parsed = schedule_type_from(type)) {
      t.type = *parsed;
    } else {
      r.fail();
    }
    r.date("origination_date", t.origination_date);
    r.date("first_due_date", t.first_due);
    r.int64("origination_fee", t.origination_fee);
    r.int64("late_fee", t.late_fee);
    r.int32("grace_days", t.grace_days);
    r.array("schedule", [&](const rapidjson::Value& element) {
      ScheduledInstallment installment;
      const bool ok = read_object(element, [&](FieldReader& item) {
        item.int32("number", installment.number);
        item.date("due_date", installment.due_date);
        item.int64("principal", installment.principal);
        item.int64("interest", installment.interest);
      });
      e.schedule.push_back(installment);
      return ok;
    });
  });
}

bool read_json(const rapidjson::Value& object, events::LoanDisbursed& e) {
  return read_object(object, [&](FieldReader& r) {
    r.string("transfer_id", e.transfer_id);
    r.int64("amount", e.disbursed.to_borrower);
    r.string("fee_transfer_id", e.fee_transfer_id);
    r.int64("fee", e.disbursed.fee);
  });
}

bool read_json(const rapidjson::Value& object, events::LoanRepaid& e) {
  return read_object(object, [&](FieldReader& r) {
    Allocation& a = e.allocation;
    std::int64_t amount = 0;
    r.string("repayment_id", e.repayment_id);
    r.int64("amount", amount);
    r.int64("penalties", a.penalties);
    r.int64("interest", a.interest);
    r.int64("principal", a.principal);
    r.int64("interest_reversed", a.interest_reversed);
    r.array("allocations", [&](const rapidjson::Value& element) {
      InstallmentAllocation part;
      const bool ok = read_object(element, [&](FieldReader& item) {
        item.int32("number", part.number);
        item.int64("penalty", part.penalty);
        item.int64("interest", part.interest);
        item.int64("principal", part.principal);
        item.boolean("waive_interest", part.waive_interest);
      });
      a.installments.push_back(part);
      return ok;
    });
    if (checked_total(a) != amount) r.fail();
  });
}

bool read_json(const rapidjson::Value& object, events::LoanDayClosed& e) {
  return read_object(object, [&](FieldReader& r) {
    DayClose& c = e.closed;
    r.date("date", c.date);
    r.int64("interest_accrued", c.interest_accrued);
    r.array("became_overdue", [&](const rapidjson::Value& element) {
      if (!element.IsInt()) return false;
      c.became_overdue.push_back(element.GetInt());
      return true;
    });
    r.array("late_fees", [&](const rapidjson::Value& element) {
      LateFee fee;
      const bool ok = read_object(element, [&](FieldReader& item) {
        item.int32("number", fee.number);
        item.int64("amount", fee.amount);
      });
      c.late_fees.push_back(fee);
      return ok;
    });
    r.int64("days_past_due", c.days_past_due);
  });
}

bool read_json(const rapidjson::Value& object, events::LoanWrittenOff& e) {
  return read_object(object, [&](FieldReader& r) {
    r.string("transfer_id", e.transfer_id);
    r.int64("principal", e.written_off.principal);
    r.int64("interest_reversed", e.written_off.interest_reversed);
    r.int64("penalties_cancelled", e.written_off.penalties_cancelled);
  });
}

}  // namespace ledger::domain::loan_codec
