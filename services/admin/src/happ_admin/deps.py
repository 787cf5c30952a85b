"""Typed access to what the lifespan put on ``app.state``, for the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from happ_admin.auth import Authenticator
from happ_admin.channels.send_test import SendTest
from happ_admin.channels.service import ChannelService
from happ_admin.conversations.resend import ReplyResender
from happ_admin.conversations.service import ConversationService
from happ_admin.dead_letters.service import DeadLetterService
from happ_admin.inbox.service import InboxService
from happ_admin.live import LiveUpdates
from happ_admin.recovery.service import RecoveryService
from happ_admin.request_log.service import RequestLogService
from happ_admin.settings import AdminSettings
from happ_admin.users.service import UserService
from happ_common.settings import HappSettings


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def _channels(request: Request) -> ChannelService:
    service: ChannelService = request.app.state.channels
    return service


def _logs(request: Request) -> RequestLogService:
    service: RequestLogService = request.app.state.logs
    return service


def _conversations(request: Request) -> ConversationService:
    service: ConversationService = request.app.state.conversations
    return service


def _send_test(request: Request) -> SendTest:
    service: SendTest = request.app.state.send_test
    return service


def _resender(request: Request) -> ReplyResender:
    service: ReplyResender = request.app.state.resender
    return service


def _recoveries(request: Request) -> RecoveryService:
    service: RecoveryService = request.app.state.recoveries
    return service


def _dead_letters(request: Request) -> DeadLetterService:
    service: DeadLetterService = request.app.state.dead_letters
    return service


def _users(request: Request) -> UserService:
    service: UserService = request.app.state.users
    return service


def _inbox(request: Request) -> InboxService:
    service: InboxService = request.app.state.inbox
    return service


def _live(request: Request) -> LiveUpdates:
    live: LiveUpdates = request.app.state.live
    return live


def _public_url(request: Request) -> str:
    happ: HappSettings = request.app.state.happ
    return happ.public_url


def _settings(request: Request) -> AdminSettings:
    settings: AdminSettings = request.app.state.settings
    return settings


Auth = Annotated[Authenticator, Depends(_auth)]
Channels = Annotated[ChannelService, Depends(_channels)]
Logs = Annotated[RequestLogService, Depends(_logs)]
Conversations = Annotated[ConversationService, Depends(_conversations)]
SendTests = Annotated[SendTest, Depends(_send_test)]
Resends = Annotated[ReplyResender, Depends(_resender)]
Recoveries = Annotated[RecoveryService, Depends(_recoveries)]
DeadLetters = Annotated[DeadLetterService, Depends(_dead_letters)]
Users = Annotated[UserService, Depends(_users)]
Inbox = Annotated[InboxService, Depends(_inbox)]
Live = Annotated[LiveUpdates, Depends(_live)]
PublicUrl = Annotated[str, Depends(_public_url)]
Settings = Annotated[AdminSettings, Depends(_settings)]
