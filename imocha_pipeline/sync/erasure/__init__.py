"""Right to erasure: ``imocha-pipeline forget`` and ``forget_job``.

- ``registry``: the keyed hash of an email (HMAC-SHA256 with IMOCHA_PIPELINE_ERASURE_KEY), the ``erased_learners``
  table, and the one rule the extract applies: an erased learner's attempts are never staged again;
- ``local``: the learner's personal data removed from every staged table (what must stay, only as the hash);
- ``remote``: the request to iMocha's GDPR endpoint and the deletes of our Degreed records, recorded in the ledger;
- ``forget``: the whole erasure (or its lifting) and its report.
"""
