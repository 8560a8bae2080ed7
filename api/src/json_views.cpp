#include "ledger/api/json_views.hpp"

#include <rapidjson/stringbuffer.h>

#include "json_text.hpp"
#include "ledger/domain/loan_schedule.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/close_of_business.hpp"

namespace ledger::api {

std::string balance_as_of_json(std::string_view account_id, const engine::BalanceAsOf& found,
                               const BalanceMoment& moment) {
  const domain::AccountState& a = found.state;
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "id", account_id);
  if (moment.as_of_us) {
    write_member(w, "as_of", rfc3339(*moment.as_of_us));
  } else if (moment.at_position) {
    write_member(w, "at_position", *moment.at_position);
  }
  write_member(w, "position", found.position.value());
  write_member(w, "recorded_at", rfc3339(found.recorded_at_us));
  write_member(w, "currency", a.currency.code());
  write_member(w, "status", domain::to_string(a.status));
  for (const auto& [key, amount] : {std::pair{"debits_posted", a.debits_posted}, {"credits_posted", a.credits_posted},
                                    {"debits_pending", a.debits_pending}, {"credits_pending", a.credits_pending},
                                    {"overdraft_limit", a.overdraft_limit}}) {
    w.Key(key);
    w.Int64(amount.minor_units());
  }
  const auto balance = a.balance();
  const auto available = a.available();
  w.Key("balance");
  balance ? w.Int64(balance->minor_units()) : w.Null();
  w.Key("available");
  available ? w.Int64(available->minor_units()) : w.Null();
  write_member(w, "version", a.version.value());
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

std::string close_of_business_json(std::chrono::year_month_day date, const engine::CloseOfBusinessResult& result,
                                   std::optional<double> seconds) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "date", domain::to_string(date));
  write_member(w, "loans", result.loans);
  write_member(w, "closed", result.closed);
  write_member(w, "failed", result.failed);
  if (!result.first_failure.empty()) {
    write_member(w, "first_failure", result.first_failure);
  }
  if (seconds) {
    w.Key("seconds");
    w.Double(*seconds);
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

}  // namespace ledger::api
