#pragma once
// FlatBuffers and JSON of the loan events (private to the engine; events.cpp dispatches here).

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <optional>

#include "ledger/domain/events.hpp"
#include "ledger/schemas/events_generated.h"

namespace ledger::domain::loan_codec {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

flatbuffers::Offset<ledger::schema::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanOriginated& e);
flatbuffers::Offset<ledger::schema::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanDisbursed& e);
flatbuffers::Offset<ledger::schema::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanRepaid& e);
flatbuffers::Offset<ledger::schema::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanDayClosed& e);
flatbuffers::Offset<ledger::schema::Event> encode(flatbuffers::FlatBufferBuilder& builder, const events::LoanWrittenOff& e);

// Whether a stored enum value is one its schema enum defines. The verifier does not check
// enum ranges, and the schema's `byte` is signed (0xFF reads as -1).
template <typename Enum>
[[nodiscard]] bool in_range(Enum value) {
  return value >= Enum::MIN && value <= Enum::MAX;
}

// std::nullopt when `root` holds no loan event or an invalid one (a bad date, say).
std::optional<DomainEvent> decode(const ledger::schema::Event& root);

void write_json(JsonWriter& w, const events::LoanOriginated& e);
void write_json(JsonWriter& w, const events::LoanDisbursed& e);
void write_json(JsonWriter& w, const events::LoanRepaid& e);
void write_json(JsonWriter& w, const events::LoanDayClosed& e);
void write_json(JsonWriter& w, const events::LoanWrittenOff& e);

// False unless `object` has exactly the fields write_json writes, each valid.
bool read_json(const rapidjson::Value& object, events::LoanOriginated& e);
bool read_json(const rapidjson::Value& object, events::LoanDisbursed& e);
bool read_json(const rapidjson::Value& object, events::LoanRepaid& e);
bool read_json(const rapidjson::Value& object, events::LoanDayClosed& e);
bool read_json(const rapidjson::Value& object, events::LoanWrittenOff& e);

}  // namespace ledger::domain::loan_codec
