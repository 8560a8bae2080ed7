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
  w.Key("id");
  write_string(w, account_id);
  if (moment.as_of_us) {
    w.Key("as_of");
    write_string(w, rfc3339(*moment.as_of_us));
  } else if (moment.at_position) {
    w.Key("at_position");
    w.Int64(*moment.at_position);
  }
  w.Key("position");
  w.Int64(found.position.value());
  w.Key("recorded_at");
  write_string(w, rfc3339(found.recorded_at_us));
  w.Key("currency");
  write_string(w, a.currency.code());
  w.Key("status");
  write_string(w, domain::to_string(a.status));
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
  w.Key("version");
  w.Int64(a.version.value());
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

std::string close_of_business_json(std::chrono::year_month_day date, const engine::CloseOfBusinessResult& result,
                                   std::optional<double> seconds) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("date");
  write_string(w, domain::to_string(date));
  w.Key("loans");
  w.Int64(result.loans);
  w.Key("closed");
  w.Int64(result.closed);
  w.Key("failed");
  w.Int64(result.failed);
  if (!result.first_failure.empty()) {
    w.Key("first_failure");
    write_string(w, result.first_failure);
  }
  if (seconds) {
    w.Key("seconds");
    w.Double(*seconds);
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

}  // namespace ledger::api
