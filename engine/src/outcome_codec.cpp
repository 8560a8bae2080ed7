#include "outcome_codec.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

std::optional<domain::RejectionCode> rejection_code_from_string(std::string_view name) {
  for (int code = 0; code <= static_cast<int>(domain::rejection_code_last); ++code) {
    if (to_string(static_cast<RejectionCode>(code)) == name) return static_cast<RejectionCode>(code);
  }
  return std::nullopt;
}

std::string outcome_to_json(const CommandOutcome& outcome) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  auto string = [&](const std::string& value) {
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  w.StartObject();
  w.Key("code");
  string(std::string(to_string(outcome.code)));
  w.Key("detail");
  string(outcome.detail);
  if (outcome.failed_member) {
    w.Key("failed_member");
    w.Uint64(*outcome.failed_member);
  }
  w.Key("command_id");
  string(outcome.command_id);
  w.Key("position");
  w.Int64(outcome.position.value());
  w.Key("versions");
  w.StartArray();
  for (const auto& [stream, version] : outcome.versions) {
    w.StartArray();
    string(stream);
    w.Int64(version.value());
    w.EndArray();
  }
  w.EndArray();
  w.Key("resource_ids");
  w.StartArray();
  for (const auto& id : outcome.resource_ids) string(id);
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::optional<domain::CommandOutcome> outcome_from_json(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) return std::nullopt;
  domain::CommandOutcome outcome;
  if (!d.HasMember("code") || !d["code"].IsString()) return std::nullopt;
  auto code = rejection_code_from_string(d["code"].GetString());
  if (!code) return std::nullopt;
  outcome.code = *code;
  if (d.HasMember("detail") && d["detail"].IsString()) outcome.detail = d["detail"].GetString();
  if (d.HasMember("failed_member") && d["failed_member"].IsUint64()) {
    outcome.failed_member = d["failed_member"].GetUint64();
  }
  if (d.HasMember("command_id") && d["command_id"].IsString()) {
    outcome.command_id = d["command_id"].GetString();
  }
  if (d.HasMember("position") && d["position"].IsInt64()) {
    outcome.position = GlobalPosition(d["position"].GetInt64());
  }
  if (d.HasMember("versions") && d["versions"].IsArray()) {
    for (const auto& pair : d["versions"].GetArray()) {
      if (!pair.IsArray() || pair.Size() != 2 || !pair[0].IsString() || !pair[1].IsInt64()) {
        return std::nullopt;
      }
      outcome.versions.emplace_back(pair[0].GetString(), StreamVersion(pair[1].GetInt64()));
    }
  }
  if (d.HasMember("resource_ids") && d["resource_ids"].IsArray()) {
    for (const auto& id : d["resource_ids"].GetArray()) {
      if (id.IsString()) outcome.resource_ids.emplace_back(id.GetString());
    }
  }
  return outcome;
}

}  // namespace ledger::engine
