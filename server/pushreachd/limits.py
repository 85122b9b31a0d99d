"""Sizes and bounds the API enforces (TPNS's where TPNS has one)."""

MAX_TARGETS = 1000  # tokens or accounts in one push
MAX_TOKEN_LENGTH = 256
MAX_ACCOUNT_LENGTH = 256
MAX_TITLE_LENGTH = 256
MAX_CONTENT_LENGTH = 4000
MAX_MESSAGE_BYTES = 4096  # title + content, UTF-8
DEFAULT_EXPIRE_SECONDS = 259200  # TPNS: offline pushes are kept 3 days by default
MAX_EXPIRE_SECONDS = 259200
MAX_DELAY_SECONDS = 259200  # sms_info.delay_trigger_time: 3 days at most
MAX_TEMPLATE_PARAMS = 16
MAX_TEMPLATE_PARAM_LENGTH = 256
MAX_SIGN_NAME_LENGTH = 64
MAX_TEMPLATE_ID_LENGTH = 32
MAX_SMS_APP_ID_LENGTH = 32
MAX_REQUEST_ID_LENGTH = 128
MAX_TOKENS_PER_ACCOUNT = 100  # TPNS: an account binds at most 100 tokens
MAX_EVENTS_PER_MESSAGE = 1000
MAX_EVENTS_PER_STREAM = 1_000_000  # ReportEvents: past it the stream ends with RESOURCE_EXHAUSTED
MAX_MESSAGES_PER_STREAM = 100_000  # ReportEvents: likewise, counting messages (empty ones too)
MAX_EVENT_FUTURE_SECONDS = 300  # device clocks run ahead; more than this is a bad timestamp
MAX_APP_NAME_LENGTH = 128
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_CREDENTIAL_LENGTH = 128
MAX_RECORD_REJECTS = 100  # rejected events described in one ReportEvents answer
# Tags (TPNS's tag API): a tag is 1 to 50 characters; a token holds at most 100 custom tags;
# an app has at most 10,000 distinct tags; one call names at most 500 tokens and 500 tags.
MAX_TAG_LENGTH = 50
MAX_TAGS_PER_TOKEN = 100
MAX_TAGS_PER_APP = 10_000
MAX_TAG_CALL_TOKENS = 500
MAX_TAG_CALL_TAGS = 500
MAX_TAG_CALL_PAIRS = 500
# tag_rules of a TAG push (TPNS states no bound; these keep one rule set small to evaluate)
MAX_TAG_RULES = 10
MAX_TAG_ITEMS = 10
MAX_TAGS_PER_ITEM = 100
BROADCAST_PAGE = 5000  # devices examined per transaction while resolving a TAG/ALL push
MAX_COLLAPSE_ID_BYTES = 64  # APNs apns-collapse-id
