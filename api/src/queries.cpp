#include "queries.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <memory>

#include "handlers/handlers.hpp"
#include "json_text.hpp"
#include "ledger/core/money.hpp"
#include "ledger/domain/loan_book.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/projections/read_models.hpp"

namespace ledger::api {

namespace {

using handlers::parse_integer;

constexpr std::int64_t page_limit_max = 1'000;
constexpr std::int64_t page_limit_default = 100;
constexpr std::int64_t wait_ms_default = 2'000;
constexpr std::int64_t wait_ms_max = 10'000;

QueryAnswer problem(int status, std::string code, std::string title, std::string detail) {
  QueryAnswer answer;
  answer.status = status;
  answer.code = std::move(code);
  answer.title = std::move(title);
  answer.detail = std::move(detail);
  return answer;
}

struct Parsed {
  std::optional<std::int64_t> min_position;
  std::int64_t wait_ms = wait_ms_default;
  projections::AuditFilter audit;  // cursor and limit serve entries too
};

// Every parameter is checked; an unknown one is an error, not silently ignored.
std::optional<QueryAnswer> parse(QueryKind kind, const QueryParameters& parameters, Parsed& out) {
  out.audit.limit = page_limit_default;
  auto invalid = [](const std::string& name, const std::string& rule) {
    return problem(400, "invalid_query", "Invalid query parameter", "invalid " + name + ": " + rule);
  };
  for (const auto& [name, value] : parameters) {
    const auto number = parse_integer(value);
    const bool paged = kind == QueryKind::entries || kind == QueryKind::audit;
    if (name == "min_position") {
      if (!number || *number < 0) return invalid(name, "a position >= 0");
      out.min_position = *number;
    } else if (name == "wait_ms") {
      if (!number || *number < 0 || *number > wait_ms_max) return invalid(name, "0 to 10000");
      out.wait_ms = *number;
    } else if (paged && name == "limit") {
      if (!number || *number < 1 || *number > page_limit_max) return invalid(name, "1 to 1000");
      out.audit.limit = static_cast<std::size_t>(*number);
    } else if (paged && name == "cursor") {
      if (!number || *number < 0) return invalid(name, "a cursor returned as next_cursor");
      out.audit.after_position = *number;
    } else if (kind == QueryKind::audit && (name == "actor" || name == "type" || name == "stream")) {
      if (value.empty() || value.size() > 256) return invalid(name, "1 to 256 characters");
      (name == "actor" ? out.audit.actor : name == "type" ? out.audit.type : out.audit.stream_id) = value;
    } else if (kind == QueryKind::audit && (name == "from" || name == "to")) {
      const auto time = parse_rfc3339(value);
      if (!time) return invalid(name, "an RFC 3339 time such as 2026-01-31T12:00:00Z");
      (name == "from" ? out.audit.from_us : out.audit.to_us) = *time;
    } else {
      return problem(400, "invalid_query", "Invalid query parameter", "unknown parameter " + name);
    }
  }
  return std::nullopt;
}

std::string account_json(const projections::AccountView& a, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("id");
  write_string(w, a.id);
  w.Key("currency");
  write_string(w, a.currency);
  w.Key("kind");
  write_string(w, a.kind);
  w.Key("owner");
  write_string(w, a.owner);
  w.Key("status");
  write_string(w, a.status);
  w.Key("ledger_code");
  w.Int64(a.ledger_code);
  w.Key("debits_posted");
  w.Int64(a.debits_posted);
  w.Key("credits_posted");
  w.Int64(a.credits_posted);
  w.Key("debits_pending");
  w.Int64(a.debits_pending);
  w.Key("credits_pending");
  w.Int64(a.credits_pending);
  // The domain's rule (an overflow here would be a corrupt read model: null, not a wrapped number).
  const auto balances = domain::account_balances(Amount(a.credits_posted), Amount(a.debits_posted),
                                                 Amount(a.debits_pending), Amount(a.overdraft_limit));
  w.Key("balance");
  balances.balance ? w.Int64(balances.balance->minor_units()) : w.Null();
  w.Key("available");
  balances.available ? w.Int64(balances.available->minor_units()) : w.Null();
  w.Key("overdraft_limit");
  w.Int64(a.overdraft_limit);
  w.Key("version");
  w.Int64(a.version);
  w.Key("watermark");
  w.Int64(watermark);
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

// Closes a page: the cursor of the next one (null on the last) and the watermark read at.
void end_page(JsonWriter& w, const std::optional<std::int64_t>& next_cursor, std::int64_t watermark) {
  w.Key("next_cursor");
  next_cursor ? w.String(std::to_string(*next_cursor).c_str()) : w.Null();
  w.Key("watermark");
  w.Int64(watermark);
  w.EndObject();
}

std::string entries_json(const projections::EntriesPage& page, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("entries");
  w.StartArray();
  for (const auto& e : page.entries) {
    w.StartObject();
    w.Key("position");
    w.Int64(e.position);
    w.Key("version");
    w.Int64(e.version);
    w.Key("transfer_id");
    write_string(w, e.transfer_id);
    w.Key("direction");
    write_string(w, e.direction);
    w.Key("phase");
    write_string(w, e.phase);
    w.Key("amount");
    w.Int64(e.amount);
    w.Key("counterparty");
    write_string(w, e.counterparty);
    w.Key("balance_after");
    w.Int64(e.balance_after);
    w.Key("recorded_at");
    write_string(w, rfc3339(e.recorded_at_us));
    w.EndObject();
  }
  w.EndArray();
  end_page(w, page.next_cursor, watermark);
  return {buffer.GetString(), buffer.GetSize()};
}

// The read model's installments as the domain's book (the due date stored as YYYY-MM-DD).
std::vector<domain::InstallmentBook> installment_books(const projections::LoanView& loan) {
  std::vector<domain::InstallmentBook> books;
  books.reserve(loan.installments.size());
  for (const auto& i : loan.installments) {
    domain::InstallmentBook book;
    book.number = i.number;
    book.due_date = domain::parse_date(i.due_date).value_or(domain::Date{});  // written from a Date
    book.principal = i.principal;
    book.interest = i.interest;
    book.principal_paid = i.principal_paid;
    book.interest_paid = i.interest_paid;
    book.penalty = i.penalty;
    book.penalty_paid = i.penalty_paid;
    book.overdue = i.overdue;
    book.interest_waived = i.interest_waived;
    books.push_back(book);
  }
  return books;
}

void write_loan_amounts(JsonWriter& w, const projections::LoanView& loan) {
  // What the loan owes and has paid, by the domain's rules (loan_book.hpp).
  const domain::InstallmentTotals totals = domain::installment_totals(installment_books(loan));
  const bool written_off = loan.status == "written_off";
  // Only an active loan has a next installment to pay.
  const projections::LoanInstallmentView* next =
      loan.status == "active" && totals.next_unsettled ? &loan.installments[*totals.next_unsettled] : nullptr;
  w.Key("outstanding_principal");
  w.Int64(written_off ? 0 : totals.principal_outstanding);
  w.Key("interest_accrued");
  w.Int64(loan.interest_recognised);
  w.Key("interest_paid");
  w.Int64(totals.interest_paid);
  w.Key("interest_overdue");
  w.Int64(totals.interest_overdue);
  w.Key("penalties_due");
  w.Int64(written_off ? 0 : totals.penalties_due);
  w.Key("penalties_paid");
  w.Int64(totals.penalties_paid);
  w.Key("next_due_date");
  if (next == nullptr) {
    w.Null();
  } else {
    write_string(w, next->due_date);
  }
  w.Key("next_due_amount");
  next == nullptr ? w.Null() : w.Int64(totals.next_due_amount);
}

void write_loan_fields(JsonWriter& w, const projections::LoanView& loan) {
  w.Key("id");
  write_string(w, loan.id);
  w.Key("account_id");
  write_string(w, loan.borrower);
  w.Key("currency");
  write_string(w, loan.currency);
  w.Key("status");
  write_string(w, loan.status);
  w.Key("principal");
  w.Int64(loan.principal);
  w.Key("rate_bps");
  w.Int(loan.rate_bps);
  w.Key("schedule");
  write_string(w, loan.schedule_type);
  w.Key("origination_date");
  write_string(w, loan.origination_date);
  w.Key("business_date");
  if (loan.closed_through.empty()) {
    w.Null();
  } else {
    write_string(w, loan.closed_through);
  }
  write_loan_amounts(w, loan);
  w.Key("days_past_due");
  w.Int64(loan.days_past_due);
  w.Key("principal_written_off");
  w.Int64(loan.principal_written_off);
  w.Key("interest_reversed");
  w.Int64(loan.interest_reversed);
  w.Key("version");
  w.Int64(loan.version);
}

std::string loan_json(const projections::LoanView& loan, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_loan_fields(w, loan);
  w.Key("watermark");
  w.Int64(watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string schedule_json(const projections::LoanView& loan, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("id");
  write_string(w, loan.id);
  w.Key("installments");
  w.StartArray();
  for (const auto& i : loan.installments) {
    const char* status = i.settled() ? "paid"
                         : i.overdue ? "overdue"
                         : (!loan.closed_through.empty() && i.due_date <= loan.closed_through) ? "due"
                                                                                                : "pending";
    w.StartObject();
    w.Key("n");
    w.Int(i.number);
    w.Key("due_date");
    write_string(w, i.due_date);
    w.Key("principal");
    w.Int64(i.principal);
    w.Key("interest");
    w.Int64(i.interest);
    w.Key("total");
    w.Int64(i.principal + i.interest);
    w.Key("paid");
    w.Int64(i.principal_paid + i.interest_paid);
    w.Key("penalty");
    w.Int64(i.penalty);
    w.Key("penalty_paid");
    w.Int64(i.penalty_paid);
    w.Key("interest_waived");
    w.Bool(i.interest_waived);
    w.Key("status");
    write_string(w, status);
    w.EndObject();
  }
  w.EndArray();
  w.Key("watermark");
  w.Int64(watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string account_loans_json(const std::vector<projections::LoanView>& loans, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("loans");
  w.StartArray();
  for (const auto& loan : loans) {
    w.StartObject();
    write_loan_fields(w, loan);
    w.EndObject();
  }
  w.EndArray();
  w.Key("watermark");
  w.Int64(watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string audit_json(const projections::AuditPage& page, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("events");
  w.StartArray();
  for (const auto& row : page.rows) {
    w.StartObject();
    w.Key("position");
    w.Int64(row.position);
    w.Key("stream_id");
    write_string(w, row.stream_id);
    w.Key("version");
    w.Int64(row.version);
    w.Key("type");
    write_string(w, row.type);
    w.Key("event_id");
    write_string(w, row.event_id);
    w.Key("recorded_at");
    write_string(w, rfc3339(row.recorded_at_us));
    for (const auto& [key, value] :
         {std::pair{"actor", &row.actor}, {"command_id", &row.command_id},
          {"correlation_id", &row.correlation_id}, {"causation_id", &row.causation_id},
          {"request_id", &row.request_id}, {"client_address", &row.client_address}}) {
      w.Key(key);
      write_string(w, *value);
    }
    w.Key("data");
    w.RawValue(row.data_json.data(), row.data_json.size(), rapidjson::kObjectType);
    w.EndObject();
  }
  w.EndArray();
  end_page(w, page.next_cursor, watermark);
  return {buffer.GetString(), buffer.GetSize()};
}

QueryAnswer read(projections::ReadModels& read_models, QueryKind kind, const std::string& id,
                 const Parsed& parsed) {
  QueryAnswer answer;
  switch (kind) {
    case QueryKind::account: {
      const auto result = read_models.account(id);
      answer.watermark = result.watermark;
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.body = account_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::entries: {
      const auto result = read_models.entries(id, parsed.audit.after_position, parsed.audit.limit);
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = entries_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::audit: {
      const auto result = read_models.audit(parsed.audit);
      answer.watermark = result.watermark;
      answer.body = audit_json(result.value, result.watermark);
      return answer;
    }
    case QueryKind::loan:
    case QueryKind::loan_schedule: {
      const auto result = read_models.loan(id);
      if (!result.value) {
        answer = problem(404, "unknown_loan", "Not found", "no loan " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = kind == QueryKind::loan ? loan_json(*result.value, result.watermark)
                                            : schedule_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::account_loans: {
      const auto result = read_models.loans_of(id);
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = account_loans_json(*result.value, result.watermark);
      return answer;
    }
  }
  return answer;
}

projections::ProjectionKind projection_of(QueryKind kind) {
  switch (kind) {
    case QueryKind::audit: return projections::ProjectionKind::audit;
    case QueryKind::loan:
    case QueryKind::loan_schedule:
    case QueryKind::account_loans: return projections::ProjectionKind::loan;
    case QueryKind::account:
    case QueryKind::entries: return projections::ProjectionKind::balance;
  }
  return projections::ProjectionKind::balance;
}

}  // namespace

void run_query(projections::ReadModels& read_models, boost::asio::thread_pool& blocking,
               QueryKind kind, std::string id, const QueryParameters& parameters,
               std::function<void(QueryAnswer)> done) {
  auto parsed = std::make_shared<Parsed>();
  if (auto failure = parse(kind, parameters, *parsed)) {
    done(std::move(*failure));
    return;
  }
  if (kind != QueryKind::audit && !domain::is_valid_id(id)) {
    done(problem(400, "invalid_id", "Invalid id", "ids are 1 to 64 of A-Za-z0-9._:-"));
    return;
  }
  auto query = [&read_models, &blocking, kind, id = std::move(id), parsed, done]() {
    boost::asio::post(blocking, [&read_models, kind, id, parsed, done] {
      try {
        done(read(read_models, kind, id, *parsed));
      } catch (const std::exception& error) {
        spdlog::warn("read model query failed: {}", error.what());
        done(problem(503, "database_unavailable", "Service unavailable",
                     "the read models cannot be read now"));
      }
    });
  };
  if (!parsed->min_position) {
    query();
    return;
  }
  const std::int64_t wanted = *parsed->min_position;
  const std::string projection(projections::to_string(projection_of(kind)));
  read_models.wait_for(projection_of(kind), wanted, std::chrono::milliseconds(parsed->wait_ms),
                       [query, done, wanted, projection, parsed](bool reached, std::int64_t watermark) {
                         if (reached) {
                           query();
                           return;
                         }
                         QueryAnswer answer = problem(
                             504, "read_model_behind", "Read model behind",
                             "the " + projection + " read model is at position " +
                                 std::to_string(watermark) + ", below min_position " +
                                 std::to_string(wanted) + ", after " +
                                 std::to_string(parsed->wait_ms) + " ms");
                         answer.watermark = watermark;
                         done(std::move(answer));
                       });
}


}  // namespace ledger::api
