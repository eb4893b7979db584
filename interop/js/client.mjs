// discord.js' voice client (@discordjs/voice) joining a channel on `wavegate serve`,
// through a minimal adapter that plays the main gateway: each op 4 it sends is
// answered with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE, the token fresh from the
// fake's control API (as Discord gives a new one each time). Prints one JSON line
// per event on stdout; exits on stdin EOF.
//
//   node client.mjs ENDPOINT CONTROL_URL GUILD CHANNEL USER SESSION
import { createInterface } from "node:readline";
import {
  joinVoiceChannel,
  VoiceConnectionStatus,
} from "@discordjs/voice";

const [endpoint, control, guildId, channelId, userId, sessionId] = process.argv.slice(2);
const say = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

async function freshToken() {
  const answer = await fetch(`${control}/users/${userId}/token`, { method: "POST" });
  return (await answer.json()).token;
}

let asked = 0;
const adapterCreator = (methods) => ({
  sendPayload(payload) {
    asked += 1;
    say("op4", { asked, channel: payload.d.channel_id });
    if (payload.d.channel_id === null) return true; // leaving
    freshToken().then((token) => {
      methods.onVoiceStateUpdate({
        guild_id: guildId, channel_id: channelId, user_id: userId, session_id: sessionId,
        deaf: false, mute: false, self_deaf: false, self_mute: false, self_video: false,
        suppress: false, request_to_speak_timestamp: null,
      });
      methods.onVoiceServerUpdate({ token, guild_id: guildId, endpoint });
    });
    return true;
  },
  destroy() {},
});

const daveEncryption = process.env.WAVEGATE_NO_DAVE !== "1";
const connection = joinVoiceChannel({
  channelId, guildId, adapterCreator, selfDeaf: false, debug: true, group: "interop",
  daveEncryption,
});
connection.on("stateChange", (before, after) => {
  const reason = after.reason === undefined ? undefined : String(after.reason);
  const code = after.closeCode;
  say("state", { from: before.status, to: after.status, reason, code });
});
connection.on("debug", (message) => say("debug", { message }));
connection.on("error", (error) => say("error", { message: String(error) }));
createInterface({ input: process.stdin }).on("close", () => {
  if (connection.state.status !== VoiceConnectionStatus.Destroyed) connection.destroy();
  say("bye");
  setTimeout(() => process.exit(0), 100);
});
