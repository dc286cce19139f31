"""A verify round that fails after its forward pass leaves the session as it was: the retry is safe and exact."""

from __future__ import annotations

import grpc
import pytest

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc


def _request(session: str, context: list[int], drafts: list[int], with_context: bool) -> dsd_pb2.VerifyRequest:
    return dsd_pb2.VerifyRequest(session_id=session, committed_len=len(context),
                                 context=context if with_context else [], draft_tokens=drafts,
                                 sampling=dsd_pb2.SamplingParams(temperature=0.8, seed=3), logprobs=True)


@pytest.mark.parametrize("fail_in", ["_accept", "_logprobs"])
def test_a_failure_after_the_forward_pass_changes_nothing(loaded, target_server, monkeypatch, fail_in):
    verifier = target_server.servicer.verifier
    channel = grpc.insecure_channel(f"127.0.0.1:{target_server.port}")
    stub = dsd_pb2_grpc.TargetStub(channel)
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    try:
        # Two sessions on the same sequence: "ref" never fails, "hit" fails once in the middle of round 2.
        answers = {}
        for session in ("ref", "hit"):
            first = stub.Verify(_request(session, prompt, [], True))
            context = [*prompt, first.next_token]
            drafts = [5, 17, 42]
            if session == "hit":
                original = getattr(verifier, fail_in)

                def broken(*args, _original=original, **kwargs):
                    _original(*args, **kwargs)  # the forward pass and the work before the failure happened
                    raise RuntimeError("injected after the forward pass")

                monkeypatch.setattr(verifier, fail_in, broken)
                with pytest.raises(grpc.RpcError) as e:
                    stub.Verify(_request(session, context, drafts, False))
                assert e.value.code() == grpc.StatusCode.INTERNAL
                monkeypatch.undo()
            answers[session] = stub.Verify(_request(session, context, drafts, False))
        assert not answers["hit"].need_context and not answers["hit"].reprefilled, "the session survived"
        assert answers["hit"].num_accepted == answers["ref"].num_accepted
        assert answers["hit"].next_token == answers["ref"].next_token
        assert [lp.logprob for lp in answers["hit"].logprobs] == [lp.logprob for lp in answers["ref"].logprobs]
    finally:
        channel.close()
