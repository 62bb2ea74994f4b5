"""GoalStateV2 as it arrives, its neighbours left as bytes until asked for.

A map entry on the wire is a repeated message of key and value, and a message is length-delimited bytes:
so a class whose `neighbor_states` is `repeated bytes` reads the very same bytes as GoalStateV2, leaving
each neighbour's entry (its id and state) as its own bytes, handed over as a list in one C call. A
controller sends one VPC's neighbour table to every host of the VPC; a pack of hollow nodes reads each
distinct entry once and knows it again by its bytes (agent.NeighborIntake). The class is made from
GoalStateV2's own descriptor at import, so it follows the schema.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from emulator.alcor.schema import goalstate_pb2, resources_pb2

PACKAGE = "cloudemu.wire"


def _lean_class():
    source = goalstate_pb2.GoalStateV2.DESCRIPTOR
    file = descriptor_pb2.FileDescriptorProto(name="cloudemu/alcor/wire.proto", package=PACKAGE, syntax="proto3",
                                              dependency=[goalstate_pb2.DESCRIPTOR.name, resources_pb2.DESCRIPTOR.name])
    message = file.message_type.add()
    source.CopyToProto(message)
    own = f".{source.full_name}."
    for f in message.field:
        if f.type_name.startswith(own):  # its map entries are its own nested types
            f.type_name = f".{PACKAGE}.{source.name}.{f.type_name[len(own):]}"
    (neighbours,) = [f for f in message.field if f.name == "neighbor_states"]
    neighbours.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    neighbours.ClearField("type_name")
    message.nested_type.remove(next(n for n in message.nested_type if n.name == "NeighborStatesEntry"))
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{source.name}"))


#: GoalStateV2 with `neighbor_states` as each map entry's raw bytes, in wire order.
LeanGoalStateV2 = _lean_class()
#: What one of those holds (its `key` and `value`).
NeighborEntry = goalstate_pb2.GoalStateV2.NeighborStatesEntry
