import {Flags, type Interfaces} from '@oclif/core'

import {type EndpointInput, resolveEndpoint, type ServerEndpoint} from '../orthanc/endpoint.js'

/** Which server a set of flags describes: the only one, or one side of a transfer. */
export type ServerRole = 'server' | 'source' | 'target'

const ENV_PREFIXES: Record<ServerRole, string[]> = {
  server: ['ORTHANC'],
  source: ['ORTHANC_SOURCE', 'ORTHANC'],
  target: ['ORTHANC_TARGET', 'ORTHANC'],
}

function flagPrefix(role: ServerRole): string {
  return role === 'server' ? '' : `${role}-`
}

type Prefix<R extends ServerRole> = R extends 'server' ? '' : `${R}-`
/** The flags beside the URL, named for the role: username, or source-username. */
export type ServerDetailFlag<R extends ServerRole> = `${Prefix<R>}${'username' | 'password-file' | 'ca-file' | 'client-cert' | 'client-key'}`

/** The flags of one server as oclif types them: the URL (required unless said otherwise) and the optional details. */
export type ServerFlags<R extends ServerRole, Required extends boolean = true> =
  & Record<R, Interfaces.OptionFlag<Required extends true ? string : string | undefined>>
  & Record<ServerDetailFlag<R>, Interfaces.OptionFlag<string | undefined>>

/** Parsed values of one server's flags. */
export type ServerFlagValues<R extends ServerRole> = Partial<Record<R | ServerDetailFlag<R>, string>>

/**
 * The flags that locate and authenticate one server. A password is never a flag value (it
 * would show in `ps` and shell history): it comes from the URL, a file, or the environment.
 */
export function serverFlags<R extends ServerRole>(role: R): ServerFlags<R>
export function serverFlags<R extends ServerRole>(role: R, required: false): ServerFlags<R, false>
export function serverFlags<R extends ServerRole>(role: R, required = true): ServerFlags<R, boolean> {
  const prefix = flagPrefix(role)
  const env = ENV_PREFIXES[role][0]
  return {
    [role]: Flags.string({
      description: `Orthanc URL of the ${role}, e.g. http://localhost:8042 (a user name and password may also be written into it, as in a browser; see Credentials in the README)`,
      required,
      env: `${env}_URL`,
    }),
    [`${prefix}username`]: Flags.string({description: `user name for the ${role} (or ${env}_USERNAME)`}),
    [`${prefix}password-file`]: Flags.string({description: `file holding the ${role}'s password (or ${env}_PASSWORD / ${env}_PASSWORD_FILE)`}),
    [`${prefix}ca-file`]: Flags.string({description: `PEM certificate authorities to trust for the ${role}'s HTTPS`}),
    [`${prefix}client-cert`]: Flags.string({description: `PEM client certificate for the ${role}`, dependsOn: [`${prefix}client-key`]}),
    [`${prefix}client-key`]: Flags.string({description: `PEM key of the client certificate for the ${role}`, dependsOn: [`${prefix}client-cert`]}),
  } as ServerFlags<R, boolean>
}

export function endpointFromFlags<R extends ServerRole>(role: R, flags: ServerFlagValues<R>): ServerEndpoint {
  const prefix = flagPrefix(role)
  const value = (name: string) => (flags as Record<string, string | undefined>)[name]
  const input: EndpointInput = {
    url: value(role) ?? '',
    username: value(`${prefix}username`),
    passwordFile: value(`${prefix}password-file`),
    caFile: value(`${prefix}ca-file`),
    clientCertFile: value(`${prefix}client-cert`),
    clientKeyFile: value(`${prefix}client-key`),
    envPrefixes: ENV_PREFIXES[role],
  }
  return resolveEndpoint(input)
}
